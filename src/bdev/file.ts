// file bdev: a regular file or block device through io_uring, one ring and one
// fd per reactor. FLUSH = fdatasync; DISCARD = punch hole; WRITE_ZEROES = zero
// range (punch hole when the driver allows unmapping).
import { closeSync, constants as FS, accessSync, fstatSync, openSync, readFileSync, statSync, truncateSync } from 'node:fs';
import { loadNative, type Mapping, type NativeShim } from '../native/index.js';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  IORING_FSYNC_DATASYNC,
  IORING_OP_FALLOCATE,
  IORING_OP_FSYNC,
  IORING_OP_READV,
  IORING_OP_WRITEV,
  IOSQE_FIXED_FILE,
  Uring,
} from '../uring/uring.js';
import { IoFifo } from './deferred.js';
import { IOVEC_BYTES, putIovecs } from './iovec.js';
import { checkKeys, parseBlockSize, parseBool, parseSize } from './spec.js';
import { type BdevDesc, type BdevIo, type BdevModule, type Channel, IoOp, MAX_IOV } from './types.js';

const SLOTS = 512;
const RING_ENTRIES = 256;

class FileChannel implements Channel {
  readonly notifyFd: number;
  private readonly native: NativeShim;
  private readonly fd: number;
  private readonly ring: Uring;
  private readonly arena: Mapping;
  private readonly arenaDv: DataView;
  private readonly slotIo: (BdevIo | undefined)[] = new Array<BdevIo | undefined>(SLOTS).fill(undefined);
  private readonly freeSlots = new Int32Array(SLOTS);
  private nfree = SLOTS;
  private readonly backlog = new IoFifo(256);
  /** requests failed before reaching the kernel, completed from the next poll() */
  private readonly backlogDone = new IoFifo(16);
  private inflightCount = 0;
  private readonly onCqe = (slot: number, res: number): void => this.complete(slot, res);

  constructor(path: string, direct: boolean, readonly: boolean) {
    this.native = loadNative();
    const n = this.native;
    const flags = (readonly ? FS.O_RDONLY : FS.O_RDWR) | (direct ? FS.O_DIRECT : 0);
    this.fd = openSync(path, flags);
    this.ring = new Uring(n, RING_ENTRIES);
    // Fixed file: the kernel skips the fd table lookup on every request.
    if (this.ring.registerFiles(Int32Array.of(this.fd)) < 0) throw new Error(`io_uring: cannot register ${path}`);
    this.notifyFd = n.eventfd(0, n.EFD_NONBLOCK | n.EFD_CLOEXEC);
    this.ring.registerEventfd(this.notifyFd);
    this.arena = n.mmap(-1, 0, SLOTS * MAX_IOV * IOVEC_BYTES, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
    this.arenaDv = new DataView(this.arena.buffer);
    for (let i = 0; i < SLOTS; i++) this.freeSlots[i] = SLOTS - 1 - i;
  }

  submit(io: BdevIo): number {
    this.inflightCount++;
    if (this.backlog.size() > 0 || !this.start(io)) this.backlog.push(io);
    return 0;
  }

  /** Put io into the SQ; false when no slot or SQ room is left. */
  private start(io: BdevIo): boolean {
    if (this.nfree === 0 || this.ring.sqSpace() === 0) return false;
    const slot = this.freeSlots[--this.nfree]!;
    this.slotIo[slot] = io;
    const r = this.ring;
    switch (io.op) {
      case IoOp.READ:
      case IoOp.WRITE: {
        const base = slot * MAX_IOV * IOVEC_BYTES;
        putIovecs(this.arenaDv, base, io.iov, io.niov);
        const op = io.op === IoOp.READ ? IORING_OP_READV : IORING_OP_WRITEV;
        r.prep(op, 0, io.offsetBytes, this.arena.addr + base, io.niov, 0, slot, IOSQE_FIXED_FILE);
        break;
      }
      case IoOp.FLUSH:
        r.prep(IORING_OP_FSYNC, 0, 0, 0, 0, IORING_FSYNC_DATASYNC, slot, IOSQE_FIXED_FILE);
        break;
      case IoOp.DISCARD:
      case IoOp.WRITE_ZEROES: {
        const mode =
          io.op === IoOp.DISCARD || io.unmap
            ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
            : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
        // io_uring fallocate: offset in off, length in addr, mode in len.
        r.prep(IORING_OP_FALLOCATE, 0, io.offsetBytes, io.lenBytes, mode, 0, slot, IOSQE_FIXED_FILE);
        break;
      }
      default:
        this.slotIo[slot] = undefined;
        this.freeSlots[this.nfree++] = slot;
        io.status = -95; // EOPNOTSUPP, reported from the next poll like any completion
        this.backlogDone.push(io);
        return true;
    }
    return true;
  }

  private complete(slot: number, res: number): void {
    const io = this.slotIo[slot];
    if (io === undefined) return; // not ours: ignore rather than trust
    this.slotIo[slot] = undefined;
    this.freeSlots[this.nfree++] = slot;
    this.inflightCount--;
    if (res < 0) io.status = res;
    else if ((io.op === IoOp.READ || io.op === IoOp.WRITE) && res !== io.lenBytes) io.status = -5; // short transfer: EIO
    else io.status = 0;
    io.done(io);
  }

  poll(): number {
    let n = this.ring.reap(this.onCqe);
    for (let io = this.backlogDone.shift(); io !== undefined; io = this.backlogDone.shift()) {
      this.inflightCount--;
      io.done(io);
      n++;
    }
    while (this.backlog.size() > 0 && this.nfree > 0 && this.ring.sqSpace() > 0) this.start(this.backlog.shift()!);
    this.ring.submit();
    return n;
  }

  inflight(): number {
    return this.inflightCount;
  }

  kernelInflight(): number {
    // Slots hold every prepared SQE; those not yet taken by io_uring_enter
    // (a failed submit) will not complete on their own.
    return SLOTS - this.nfree - this.ring.unsubmitted();
  }

  clearNotify(): void {
    this.native.eventfdRead(this.notifyFd);
  }

  close(): void {
    this.ring.close();
    this.native.close(this.notifyFd);
    this.native.munmap(this.arena.buffer, this.arena.addr, SLOTS * MAX_IOV * IOVEC_BYTES);
    closeSync(this.fd);
  }
}

/** Size of a regular file or block device, in bytes. */
function deviceSize(path: string): number {
  const st = statSync(path);
  if (st.isFile()) return st.size;
  if (st.isBlockDevice()) {
    const major = Math.floor(st.rdev / 256) & 0xfff;
    const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
    return Number(readFileSync(`/sys/dev/block/${major}:${minor}/size`, 'utf8').trim()) * 512;
  }
  throw new Error(`file: path=${path} is neither a regular file nor a block device`);
}

export const fileBdev: BdevModule = {
  type: 'file',
  keys: {
    name: 'bdev name (required)',
    path: 'regular file or block device (required); its size is the capacity',
    direct: 'on: O_DIRECT, bypass the host page cache (default off)',
    readonly: 'on: open read-only (default off)',
    'block-size': 'logical block size: 512 or 4096 (default 512)',
  },
  normalize(spec) {
    checkKeys('file', spec, fileBdev.keys, ['name', 'path']);
    const onOff = (k: string) => (parseBool(k, spec[k], false) ? 'on' : 'off');
    return { name: spec.name!, path: spec.path!, direct: onOff('direct'), readonly: onOff('readonly'), 'block-size': String(parseBlockSize(spec['block-size'])) };
  },
  create(spec): BdevDesc {
    const path = spec.path!;
    const direct = spec.direct === 'on';
    const readonly = spec.readonly === 'on';
    const blockSize = Number(spec['block-size']);
    try {
      accessSync(path, readonly ? FS.R_OK : FS.R_OK | FS.W_OK);
    } catch (e) {
      throw new Error(`file: cannot open path=${path} ${readonly ? 'for reading' : 'for reading and writing'}: ${(e as Error).message}`);
    }
    const sizeBytes = deviceSize(path);
    if (sizeBytes < blockSize) throw new Error(`file: path=${path} is smaller than one ${blockSize}-byte block`);
    // Probe the flags once here so a bad combination (O_DIRECT on tmpfs) fails at start-up, not in a reactor.
    const fd = openSync(path, (readonly ? FS.O_RDONLY : FS.O_RDWR) | (direct ? FS.O_DIRECT : 0));
    const isBlock = fstatSync(fd).isBlockDevice();
    closeSync(fd);
    return {
      info: {
        name: spec.name!,
        type: 'file',
        blockSize,
        // A trailing partial block is not addressable.
        sizeBytes: sizeBytes - (sizeBytes % blockSize),
        readonly,
        caps: { flush: true, discard: true, writeZeroes: true },
        maxDiscardBytes: 1 << 30,
      },
      params: { path, direct, readonly, isBlock },
    };
  },
  open(desc): Channel {
    const p = desc.params;
    return new FileChannel(p.path as string, p.direct as boolean, p.readonly as boolean);
  },
  resize(desc, size): number {
    const path = desc.params.path as string;
    if (size !== undefined) {
      if (desc.params.isBlock) throw new Error(`file: ${path} is a block device; resize the device itself, then resize without a size`);
      if (desc.info.readonly) throw new Error(`file: ${path} is read-only`);
      truncateSync(path, parseSize('size', size, desc.info.blockSize));
    }
    const bytes = deviceSize(path);
    desc.info.sizeBytes = bytes - (bytes % desc.info.blockSize);
    return desc.info.sizeBytes;
  },
  describe: (desc) => ({
    productName: desc.params.direct ? 'AIO disk' : 'File disk',
    driverSpecific: { file: { filename: desc.params.path, direct: desc.params.direct, readonly: desc.info.readonly, block_device: desc.params.isBlock } },
  }),
  destroy(): void {},
};
