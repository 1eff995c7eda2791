// malloc bdev: a RAM disk in anonymous memory, which every reactor (a thread of
// this process) addresses directly. Transparent huge pages are asked for: random
// 4 KiB copies over a large disk otherwise miss the TLB on nearly every request
// (populate=on). Discard and unmapping write-zeroes give pages back
// (MADV_DONTNEED: private anonymous pages read back as zeroes); on huge pages
// the memory returns only for whole 2 MiB ranges.
import { loadNative } from '../native/index.js';
import { DeferredCompletions } from './deferred.js';
import { checkKeys, parseBlockSize, parseBool, parseSize } from './spec.js';
import { type BdevDesc, type BdevIo, type BdevModule, type Channel, IoOp } from './types.js';

const PAGE = 4096;

class MallocChannel implements Channel {
  readonly notifyFd = -1;
  private readonly q = new DeferredCompletions();
  private readonly native = loadNative();

  constructor(
    /** the disk's first byte, mapped by create() for the whole process */
    private readonly base: number,
    private readonly sizeBytes: number,
  ) {}

  submit(io: BdevIo): number {
    const n = this.native;
    const base = this.base;
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
    const base = this.base;
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
    if (n.madvise(base + a, b - a, n.MADV_DONTNEED) < 0) n.memset(base + a, 0, b - a);
    if (off + len > b) n.memset(base + b, 0, off + len - b);
  }

  poll(): number {
    return this.q.drain();
  }
  kernelInflight(): number {
    return 0;
  }
  inflight(): number {
    return this.q.size();
  }
  clearNotify(): void {}
  close(): void {}
}

export const mallocBdev: BdevModule = {
  type: 'malloc',
  keys: {
    name: 'bdev name (required)',
    size: 'capacity, e.g. 1G (required); pages are allocated on first write',
    'block-size': 'logical block size: 512 or 4096 (default 512)',
    populate: 'on: allocate all the memory at start, on transparent huge pages where allowed, as a RAM disk does (no page faults, fewer TLB misses; default off)',
  },
  normalize(spec) {
    checkKeys('malloc', spec, mallocBdev.keys, ['name', 'size']);
    const blockSize = parseBlockSize(spec['block-size']);
    return {
      name: spec.name!,
      size: String(parseSize('size', spec.size!, Math.max(blockSize, PAGE))),
      'block-size': String(blockSize),
      populate: parseBool('populate', spec.populate, false) ? 'on' : 'off',
    };
  },
  create(spec): BdevDesc {
    const populate = spec.populate === 'on';
    const blockSize = Number(spec['block-size']);
    const sizeBytes = Number(spec.size);
    const n = loadNative();
    // NORESERVE: an unpopulated disk costs only what has been written.
    const m = n.mmap(-1, 0, sizeBytes, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS | n.MAP_NORESERVE);
    // Huge pages only for a populated disk, which holds all its memory anyway:
    // on a sparse one a 4 KiB write would allocate 2 MiB, and khugepaged would
    // refill discarded holes. Advice only: with THP off, 4 KiB pages serve.
    const huge = populate && n.madvise(m.addr, sizeBytes, n.MADV_HUGEPAGE) === 0;
    if (populate && n.madvise(m.addr, sizeBytes, n.MADV_POPULATE_WRITE) < 0) {
      n.memset(m.addr, 0, sizeBytes); // before 5.14: touching every page populates it
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
        volatile: true,
      },
      params: { addr: m.addr, hugePages: huge, populate },
    };
  },
  open(desc): Channel {
    return new MallocChannel(desc.params.addr as number, desc.info.sizeBytes);
  },
  describe: (desc) => ({ productName: 'Malloc disk', driverSpecific: { malloc: { populate: desc.params.populate, huge_pages: desc.params.hugePages } } }),
  destroy(desc): void {
    // Every channel is closed by now (reactors are shut down first).
    loadNative().munmap(null, desc.params.addr as number, desc.info.sizeBytes);
  },
};
