// crc: an example bdev module, a layer that checksums every block written
// through it (CRC-32, kept in memory shared by every reactor) and fails a read
// whose block comes back with another checksum with EIO, instead of handing
// the guest bad data, logging which block. It catches corruption below it (a
// disk, a store, an error bdev's corrupt_data) while vdx runs: the sums live
// in memory and die with the process, so blocks not written since vdx started
// are passed unchecked.
//
//   vdx serve --bdev-module contrib/bdev-modules/crc.mjs \
//             --bdev file:name=f0,path=disk.img --bdev crc:name=c0,base=f0 \
//             --export vhost-user:bdev=c0,socket=/run/vdx/c0.sock
//
// It follows the rules of the hot path: nothing is allocated per I/O (the
// scratch block and the views are made once, in open()), completions run from
// the base's poll (ForwardChannel does that), and the work per block is a copy
// into the scratch block and a table-driven CRC.
import { ForwardChannel, IoOp, checkKeys, copyMemory, hostBuffer, windowInfo } from 'vdx/bdev';

const EIO = -5;
const RECORD = 0;
const VERIFY = 1;
/** sums for at most this many blocks (16 GiB of 512-byte blocks: 160 MiB of memory) */
const MAX_BLOCKS = 1 << 25;

const TABLE = new Int32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  TABLE[n] = c;
}

function crc32(bytes, len) {
  let c = -1;
  for (let i = 0; i < len; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c;
}

/** Views over the shared memory: a sum and a "known" flag per block, and two counters. */
function views(desc) {
  const n = desc.info.sizeBytes / desc.info.blockSize;
  return {
    sums: new Int32Array(desc.shared, 0, n),
    stats: new Int32Array(desc.shared, 4 * n, 2), // verified, mismatches
    known: new Uint8Array(desc.shared, 4 * n + 8, n),
  };
}

class CrcChannel extends ForwardChannel {
  constructor(base, baseDesc, ctx, desc) {
    super(base, baseDesc, ctx, 0, desc.info.sizeBytes);
    this.log = ctx.log;
    this.name = desc.info.name;
    this.bs = desc.info.blockSize;
    Object.assign(this, views(desc));
    this.scratch = hostBuffer(this.bs);
  }

  submit(io) {
    // While a write or discard is on its way, its blocks are not known: a read
    // racing it may see either the old data or the new.
    if (io.op === IoOp.WRITE || io.op === IoOp.DISCARD || io.op === IoOp.WRITE_ZEROES) this.forget(io.offsetBytes, io.lenBytes);
    return super.submit(io);
  }

  baseDone(child) {
    if (child.status === 0 && this.aligned(child)) {
      // The buffers still hold what was written (a driver leaves them alone until the completion).
      if (child.op === IoOp.WRITE) this.eachBlock(child, RECORD);
      else if (child.op === IoOp.READ && this.eachBlock(child, VERIFY) > 0) child.status = EIO;
    }
    this.finish(child);
  }

  /** One block's CRC: kept (RECORD) or checked (VERIFY); returns 1 for a mismatch. */
  block(block, sum, mode) {
    if (mode === RECORD) {
      this.sums[block] = sum;
      this.known[block] = 1;
      return 0;
    }
    if (this.known[block] !== 1) return 0;
    Atomics.add(this.stats, 0, 1);
    if (sum === this.sums[block]) return 0;
    Atomics.add(this.stats, 1, 1);
    this.log('error', `crc ${this.name}: block ${block} read back with CRC-32 ${(sum >>> 0).toString(16)}, written with ${(this.sums[block] >>> 0).toString(16)}; the read fails with EIO`);
    return 1;
  }

  aligned(io) {
    return io.offsetBytes % this.bs === 0 && io.lenBytes % this.bs === 0;
  }

  forget(offset, len) {
    const first = Math.floor(offset / this.bs);
    const end = Math.min(Math.ceil((offset + len) / this.bs), this.known.length);
    this.known.fill(0, first, end);
  }

  /** Gather each block of the I/O's buffers into the scratch block and record or check its CRC; returns the mismatches. */
  eachBlock(io, mode) {
    const bs = this.bs;
    const scratch = this.scratch;
    let block = io.offsetBytes / bs;
    let filled = 0;
    let bad = 0;
    for (let i = 0; i < io.niov; i++) {
      let addr = io.iov[2 * i];
      let left = io.iov[2 * i + 1];
      while (left > 0) {
        const k = Math.min(left, bs - filled);
        copyMemory(scratch.addr + filled, addr, k);
        filled += k;
        addr += k;
        left -= k;
        if (filled === bs) {
          bad += this.block(block++, crc32(scratch.bytes, bs), mode);
          filled = 0;
        }
      }
    }
    return bad;
  }

  close() {
    if (this.isClosed) return;
    this.scratch.free();
    super.close();
  }
}

export default {
  type: 'crc',
  keys: {
    name: 'bdev name (required)',
    base: 'the bdev whose blocks it checksums (required)',
  },
  baseKeys: ['base'],
  normalize(spec) {
    checkKeys('crc', spec, this.keys, ['name', 'base']);
    return { name: spec.name, base: spec.base };
  },
  create(spec, bases) {
    const base = bases[0];
    const blocks = Math.floor(base.info.sizeBytes / base.info.blockSize);
    if (blocks > MAX_BLOCKS) throw new Error(`${base.info.name} has ${blocks} blocks; crc keeps sums for at most ${MAX_BLOCKS} (put it on a split part)`);
    const size = blocks * base.info.blockSize;
    return { info: windowInfo(spec.name, 'crc', base, size), params: {}, bases: [base], shared: new SharedArrayBuffer(4 * blocks + 8 + blocks) };
  },
  open(desc, ctx) {
    const base = desc.bases[0];
    return new CrcChannel(ctx.openBase(base), base, ctx, desc);
  },
  describe(desc) {
    const { stats } = views(desc);
    return { productName: 'crc (example module)', driverSpecific: { crc: { base_bdev: desc.bases[0].info.name, verified: stats[0], mismatches: stats[1] } } };
  },
  destroy() {},
};
