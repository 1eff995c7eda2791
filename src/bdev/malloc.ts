// malloc bdev: a RAM disk in a memfd, so every reactor maps the same pages.
// Discard and unmapping write-zeroes give pages back (MADV_REMOVE).
import { loadNative } from '../native/index.js';
import { DeferredCompletions } from './deferred.js';
import { checkKeys, parseBlockSize, parseBool, parseSize } from './spec.js';
import { type BdevDesc, type BdevIo, type BdevModule, type Channel, IoOp } from './types.js';

const PAGE = 4096;

class MallocChannel implements Channel {
  readonly notifyFd = -1;
  private readonly q = new DeferredCompletions();
  private readonly native = loadNative();
  private readonly map: { buffer: ArrayBuffer; addr: number };

  constructor(
    fd: number,
    private readonly sizeBytes: number,
    populate: boolean,
  ) {
    const n = this.native;
    // populate: this reactor's page tables too, so no access ever faults.
    this.map = n.mmap(fd, 0, sizeBytes, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED | (populate ? n.MAP_POPULATE : 0));
  }

  submit(io: BdevIo): number {
    const n = this.native;
    const base = this.map.addr;
    let off = io.offsetBytes;
    if (off + io.lenBytes > this.sizeBytes) return -22; // EINVAL: the engine checked already
    switch (io.op) {
      case IoOp.READ:
      case IoOp.WRITE: {
        const iov = io.iov;
        for (let i = 0; i < io.niov; i++) {
          const addr = iov[2 * i]!;
          const len = iov[2 * i + 1]!;
          if (off + len > this.sizeBytes) return -22;
          if (io.op === IoOp.READ) n.memcpy(addr, base + off, len);
          else n.memcpy(base + off, addr, len);
          off += len;
        }
        break;
      }
      case IoOp.FLUSH:
        break;
      case IoOp.DISCARD:
      case IoOp.WRITE_ZEROES:
        this.zero(io.offsetBytes, io.lenBytes, io.op === IoOp.DISCARD || io.unmap);
        break;
      default:
        return -95; // EOPNOTSUPP
    }
    io.status = 0;
    this.q.push(io);
    return 0;
  }

  /** Zero a range; with `release`, whole pages go back to the kernel and read back as zeroes. */
  private zero(off: number, len: number, release: boolean): void {
    const n = this.native;
    const base = this.map.addr;
    if (!release) {
      n.memset(base + off, 0, len);
      return;
    }
    const a = Math.ceil(off / PAGE) * PAGE;
    const b = Math.floor((off + len) / PAGE) * PAGE;
    if (b <= a) {
      n.memset(base + off, 0, len);
      return;
    }
    if (a > off) n.memset(base + off, 0, a - off);
    if (n.madviseRemove(base + a, b - a) < 0) n.memset(base + a, 0, b - a);
    if (off + len > b) n.memset(base + b, 0, off + len - b);
  }

  poll(): number {
    return this.q.drain();
  }
  inflight(): number {
    return this.q.size();
  }
  clearNotify(): void {}
  close(): void {
    this.native.munmap(this.map.buffer, this.map.addr, this.sizeBytes);
  }
}

export const mallocBdev: BdevModule = {
  type: 'malloc',
  keys: {
    name: 'bdev name (required)',
    size: 'capacity, e.g. 1G (required); pages are allocated on first write',
    'block-size': 'logical block size: 512 or 4096 (default 512)',
    populate: 'on: allocate all the memory at start, as a RAM disk does (no page faults on first access; default off)',
  },
  create(spec): BdevDesc {
    checkKeys('malloc', spec, mallocBdev.keys, ['name', 'size']);
    const populate = parseBool('populate', spec.populate, false);
    const blockSize = parseBlockSize(spec['block-size']);
    const sizeBytes = parseSize('size', spec.size!, Math.max(blockSize, PAGE));
    const n = loadNative();
    const fd = n.memfdCreate(`vdx-malloc-${spec.name}`, n.MFD_CLOEXEC);
    try {
      n.ftruncate(fd, sizeBytes);
      if (populate) {
        // Fault every page into the memfd once; the pages stay after the unmap.
        const m = n.mmap(fd, 0, sizeBytes, n.PROT_READ | n.PROT_WRITE, n.MAP_SHARED | n.MAP_POPULATE);
        n.munmap(m.buffer, m.addr, sizeBytes);
      }
    } catch (e) {
      n.close(fd);
      throw e;
    }
    return {
      info: {
        name: spec.name!,
        type: 'malloc',
        blockSize,
        sizeBytes,
        readonly: false,
        caps: { flush: true, discard: true, writeZeroes: true },
        maxDiscardBytes: 1 << 30,
      },
      params: { fd, populate },
    };
  },
  open(desc): Channel {
    return new MallocChannel(desc.params.fd as number, desc.info.sizeBytes, desc.params.populate === true);
  },
  destroy(desc): void {
    loadNative().close(desc.params.fd as number);
  },
};
