// crypt bdev: AES-XTS over a base, byte for byte what Linux dm-crypt's plain
// mode writes (cipher aes-xts-plain64): each sector of sector-size bytes is one
// XTS data unit whose tweak is its number as a little-endian 64-bit value, in
// 512-byte units (or in sector-size units with iv-large-sectors=on, cryptsetup's
// --iv-large-sectors). So a volume written through vdx opens with
//   cryptsetup open --type plain --cipher aes-xts-plain64 --key-size 512 \
//     --key-file KEY --sector-size 4096 BASE name
// and the other way round. The key (32 bytes: two AES-128 keys, cryptsetup's
// --key-size 256; 64 bytes: two AES-256 keys, --key-size 512) is read from a
// file when the bdev is made and kept in memory every reactor sees.
//
// The cipher is OpenSSL's, through the shim (native/crypto.cc), one call per
// request: node:crypto needs a cipher object per sector, measured at 24 µs per
// 4 KiB of 512-byte sectors against 1.5 µs through the shim. Reads are
// decrypted in place in the guest's buffers when the base has filled them;
// writes are encrypted into a bounce buffer of the channel's own, since the
// guest's data must not change under it. A sector split across two buffer
// segments goes through a one-sector scratch buffer.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { hostBuffer, type HostBuffer } from './api.js';
import { loadNative, type NativeShim } from '../native/index.js';
import { DeferredCompletions } from './deferred.js';
import { ChildPool, layerSpec } from './layer.js';
import { parseBool } from './spec.js';
import { type BdevDesc, BdevIo, type BdevModule, type Channel, type ChannelContext, IoOp } from './types.js';

const EINVAL = -22;
const EIO = -5;

const KEYS = {
  name: 'bdev name (required)',
  base: 'the bdev that holds the ciphertext (required); claimed for writing while the crypt bdev exists',
  'key-file': 'file holding the raw key: 32 bytes (aes-xts with 128-bit keys) or 64 (256-bit keys) (required)',
  'key-size': 'key size in bits, 256 or 512, as cryptsetup\'s --key-size (default: the key file\'s length; a longer file gives its first bytes, as cryptsetup does)',
  cipher: 'aes-xts-plain64, the only one (default)',
  'sector-size': 'encryption sector size, 512 or 4096 (cryptsetup --sector-size; default 512); also the block size the guest sees',
  'iv-large-sectors': 'on: number sectors in sector-size units, not 512-byte ones (cryptsetup --iv-large-sectors; default off)',
};

class CryptChannel implements Channel {
  readonly notifyFd: number = -1;
  readonly copiesLater: boolean;
  private readonly native: NativeShim;
  private readonly xts: number;
  private readonly sector: number;
  /** IV units per sector: sector/512, or 1 with iv-large-sectors */
  private readonly ivStep: number;
  /** bytes per IV unit: 512, or the sector with iv-large-sectors */
  private readonly ivUnit: number;
  private readonly sizeBytes: number;
  private readonly children: ChildPool;
  /** bounce buffers by child slot, grown to the largest write each has carried */
  private bounce: (HostBuffer | undefined)[] = [];
  private readonly scratch: HostBuffer;
  private inFlight = 0;
  private readonly failed = new DeferredCompletions(8);
  private closed = false;
  private readonly childDone = (child: BdevIo): void => this.finish(child);

  constructor(
    private readonly base: Channel,
    private readonly desc: BdevDesc,
    private readonly ctx: ChannelContext,
  ) {
    this.native = loadNative();
    // Reads are decrypted in guest memory after submit returned, from the base's completion.
    this.copiesLater = true;
    this.sector = desc.info.blockSize;
    const large = desc.params.ivLargeSectors === true;
    this.ivStep = large ? 1 : this.sector / 512;
    this.ivUnit = large ? this.sector : 512;
    this.sizeBytes = desc.info.sizeBytes;
    this.xts = this.native.xtsCreate(new Uint8Array(desc.shared!));
    this.scratch = hostBuffer(this.sector);
    this.children = new ChildPool(this.childDone);
  }

  submit(io: BdevIo): number {
    const op = io.op;
    if (op === IoOp.DISCARD || op === IoOp.WRITE_ZEROES) return -95; // EOPNOTSUPP: the caps do not offer them
    if (op !== IoOp.FLUSH && (io.offsetBytes < 0 || io.offsetBytes + io.lenBytes > this.sizeBytes || io.offsetBytes % this.sector !== 0 || io.lenBytes % this.sector !== 0)) return EINVAL;
    const child = this.children.take();
    child.op = op;
    child.offsetBytes = io.offsetBytes;
    child.lenBytes = io.lenBytes;
    child.unmap = false;
    child.status = 0;
    child.ctx = io;
    if (op === IoOp.WRITE) {
      let b = this.bounce[child.slot];
      if (b === undefined || b.bytes.length < io.lenBytes) {
        // Rare: a write larger than this child carried before; off the steady state.
        b?.free();
        b = this.bounce[child.slot] = hostBuffer(Math.max(io.lenBytes, 64 * 1024));
      }
      if (this.crypt(1, io, b.addr) < 0) {
        this.children.give(child);
        return EIO;
      }
      child.niov = 1;
      child.iov[0] = b.addr;
      child.iov[1] = io.lenBytes;
    } else {
      child.niov = io.niov;
      for (let i = 0, n = 2 * io.niov; i < n; i++) child.iov[i] = io.iov[i]!;
    }
    const rc = this.base.submit(child);
    if (rc < 0) {
      this.children.give(child);
      return rc;
    }
    this.inFlight++;
    return 0;
  }

  private finish(child: BdevIo): void {
    const parent = child.ctx as BdevIo;
    this.children.give(child);
    this.inFlight--;
    parent.status = this.closed ? EIO : child.status;
    if (parent.op === IoOp.READ && parent.status === 0 && this.crypt(0, parent, -1) < 0) parent.status = EIO;
    parent.done(parent);
  }

  /**
   * Encrypt the I/O's segments into dst (a contiguous buffer), or decrypt
   * them in place (dst -1). Runs of whole sectors inside one segment go in one
   * call; a sector across segments goes through the scratch sector.
   */
  private crypt(encrypt: number, io: BdevIo, dst: number): number {
    const n = this.native;
    const sector = this.sector;
    let iv = io.offsetBytes / this.ivUnit;
    let out = dst;
    let partial = 0;
    for (let i = 0; i < io.niov; i++) {
      let addr = io.iov[2 * i]!;
      let len = io.iov[2 * i + 1]!;
      if (partial > 0) {
        // Finish the sector begun in the previous segment.
        const take = Math.min(sector - partial, len);
        n.memcpy(this.scratch.addr + partial, addr, take);
        partial += take;
        addr += take;
        len -= take;
        if (partial < sector) continue;
        if (n.xtsCrypt(this.xts, encrypt, this.scratch.addr, encrypt ? out : this.scratch.addr, sector, sector, iv, this.ivStep) < 0) return EIO;
        if (!encrypt) this.scatterBack(io, i, take);
        else out += sector;
        iv += this.ivStep;
        partial = 0;
      }
      const whole = len - (len % sector);
      if (whole > 0) {
        if (n.xtsCrypt(this.xts, encrypt, addr, encrypt ? out : addr, whole, sector, iv, this.ivStep) < 0) return EIO;
        if (encrypt) out += whole;
        iv += (whole / sector) * this.ivStep;
        addr += whole;
        len -= whole;
      }
      if (len > 0) {
        n.memcpy(this.scratch.addr, addr, len);
        partial = len;
      }
    }
    return partial === 0 ? 0 : EINVAL;
  }

  /** A decrypted scratch sector back into the segments it came from: it ends `tail` bytes into segment `last`. */
  private scatterBack(io: BdevIo, last: number, tail: number): void {
    const n = this.native;
    let end = this.sector;
    // The tail in segment `last`, then backwards through the segments before it.
    n.memcpy(io.iov[2 * last]!, this.scratch.addr + end - tail, tail);
    end -= tail;
    for (let i = last - 1; end > 0 && i >= 0; i--) {
      const len = io.iov[2 * i + 1]!;
      const take = Math.min(end, len);
      n.memcpy(io.iov[2 * i]! + len - take, this.scratch.addr + end - take, take);
      end -= take;
    }
  }

  poll(): number {
    return this.failed.size() > 0 ? this.failed.drain() : 0;
  }

  inflight(): number {
    return this.inFlight + this.failed.size();
  }

  kernelInflight(): number {
    return 0;
  }

  clearNotify(): void {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.xtsFree(this.xts);
    // With I/O still in flight (a broken queue), the kernel may yet read a bounce buffer: those stay mapped.
    if (this.inFlight === 0) for (const b of this.bounce) b?.free();
    this.scratch.free();
    this.ctx.closeBase(this.desc.bases![0]!);
  }
}

function parseSector(v: string | undefined): number {
  if (v === undefined) return 512;
  if (v === '512' || v === '4096') return Number(v);
  throw new Error(`crypt: sector-size=${v} must be 512 or 4096`);
}

export const cryptBdev: BdevModule = {
  type: 'crypt',
  keys: KEYS,
  baseKeys: ['base'],
  normalize(spec) {
    const { name, base } = layerSpec('crypt', spec, KEYS);
    if (!spec['key-file']) throw new Error(`crypt: missing key-file= (${KEYS['key-file']})`);
    const cipher = spec.cipher ?? 'aes-xts-plain64';
    if (cipher !== 'aes-xts-plain64') throw new Error(`crypt: cipher=${cipher} is not supported; vdx has aes-xts-plain64 (dm-crypt plain mode's default)`);
    const keySize = spec['key-size'];
    if (keySize !== undefined && keySize !== '256' && keySize !== '512') throw new Error(`crypt: key-size=${keySize} must be 256 or 512 (bits, as cryptsetup's --key-size)`);
    const out: Record<string, string> = {
      // Absolute, so a saved configuration finds it from any directory.
      name, base, 'key-file': resolve(spec['key-file']), cipher,
      'sector-size': String(parseSector(spec['sector-size'])),
      'iv-large-sectors': parseBool('iv-large-sectors', spec['iv-large-sectors'], false) ? 'on' : 'off',
    };
    if (keySize !== undefined) out['key-size'] = keySize;
    return out;
  },
  create(spec, bases): BdevDesc {
    const base = bases[0]!;
    const sector = Number(spec['sector-size']);
    if (base.info.blockSize > sector) throw new Error(`crypt: ${base.info.name} has ${base.info.blockSize}-byte blocks, larger than sector-size=${sector}`);
    if (base.info.readonly) throw new Error(`crypt: ${base.info.name} is read-only; a crypt bdev writes through to its base`);
    let key: Buffer;
    try {
      key = readFileSync(spec['key-file']!);
    } catch (e) {
      throw new Error(`crypt: cannot read key-file=${spec['key-file']}: ${(e as Error).message}`);
    }
    const bytes = spec['key-size'] !== undefined ? Number(spec['key-size']) / 8 : key.length;
    if (bytes !== 32 && bytes !== 64) {
      key.fill(0);
      throw new Error(`crypt: key-file=${spec['key-file']} holds ${key.length} bytes; a raw key is 32 (key-size 256) or 64 (key-size 512), or give key-size= to take the file's first bytes`);
    }
    if (key.length < bytes) {
      key.fill(0);
      throw new Error(`crypt: key-file=${spec['key-file']} holds ${key.length} bytes, fewer than key-size=${bytes * 8} needs (${bytes})`);
    }
    const shared = new SharedArrayBuffer(bytes);
    new Uint8Array(shared).set(key.subarray(0, bytes));
    key.fill(0);
    // The key must be one OpenSSL takes (it refuses two equal halves): found now, not on a reactor.
    const n = loadNative();
    const k = new Uint8Array(shared);
    const half = bytes / 2;
    if (k.subarray(0, half).every((b, i) => b === k[half + i])) {
      k.fill(0);
      throw new Error(`crypt: the key in key-file=${spec['key-file']} has two equal halves; XTS needs two different keys (OpenSSL refuses such a key)`);
    }
    n.xtsFree(n.xtsCreate(k));
    const sizeBytes = Math.floor(base.info.sizeBytes / sector) * sector;
    if (sizeBytes === 0) throw new Error(`crypt: ${base.info.name} is smaller than one ${sector}-byte sector`);
    return {
      info: {
        name: spec.name!,
        type: 'crypt',
        blockSize: sector,
        sizeBytes,
        readonly: false,
        // Discarded or zeroed ciphertext would read back as noise: neither is offered (dm-crypt passes discards only when told to).
        caps: { flush: base.info.caps.flush, discard: false, writeZeroes: false },
        maxDiscardBytes: 0,
        ...(base.info.singleReactor ? { singleReactor: true } : {}),
        ...(base.info.volatile ? { volatile: true } : {}),
      },
      params: { ivLargeSectors: spec['iv-large-sectors'] === 'on' },
      bases: [base],
      shared,
    };
  },
  open(desc: BdevDesc, ctx: ChannelContext): Channel {
    return new CryptChannel(ctx.openBase(desc.bases![0]!), desc, ctx);
  },
  describe: (desc) => ({
    productName: 'crypto',
    driverSpecific: {
      crypto: {
        base_bdev_name: desc.bases![0]!.info.name,
        name: desc.info.name,
        cipher: 'AES_XTS',
        key_size_bits: desc.shared!.byteLength * 8,
        sector_size: desc.info.blockSize,
        iv_large_sectors: desc.params.ivLargeSectors === true,
      },
    },
  }),
  destroy(desc): void {
    new Uint8Array(desc.shared!).fill(0);
  },
};
