// io_uring driven from TypeScript over the rings the shim mapped: we fill SQEs
// and reap CQEs ourselves; the shim only enters the kernel. One ring per
// reactor channel; single-threaded, so no locking, only ordering (Atomics on
// the shared head/tail words).
import type { NativeShim, UringSetup } from '../native/index.js';

// Opcodes and flags from <linux/io_uring.h>
export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_FALLOCATE = 17;
export const IORING_FSYNC_DATASYNC = 1;
export const IOSQE_FIXED_FILE = 1;
export const IORING_ENTER_GETEVENTS = 1;
/** io_uring_setup flags (5.19+): run completion work when we enter, and tell us when to */
export const IORING_SETUP_COOP_TASKRUN = 1 << 8;
export const IORING_SETUP_TASKRUN_FLAG = 1 << 9;
/** sq flags word: completion work is waiting for us to enter the kernel */
const IORING_SQ_TASKRUN = 1 << 2;
const EINVAL = 22;
// fallocate modes from <linux/falloc.h>
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

const SQE_SIZE = 64;
const CQE_SIZE = 16;

export type CqeHandler = (userData: number, res: number) => void;

export class Uring {
  readonly fd: number;
  private readonly setup: UringSetup;
  private readonly sqHead: Uint32Array;
  private readonly sqTail: Uint32Array;
  private readonly sqArray: Uint32Array;
  private readonly sqMask: number;
  private readonly sqEntries: number;
  private readonly cqHead: Uint32Array;
  private readonly cqTail: Uint32Array;
  private readonly cqes: DataView;
  private readonly cqesBase: number;
  private readonly cqMask: number;
  private readonly sqes: DataView;
  private readonly sqFlags: Uint32Array;
  /** SQEs written but not yet handed to the kernel */
  private pending = 0;
  private localTail: number;

  constructor(
    private readonly native: NativeShim,
    entries: number,
  ) {
    // A polling reactor should not be interrupted (an IPI per completion batch)
    // to post CQEs: with COOP_TASKRUN the kernel leaves that work for our next
    // entry and raises IORING_SQ_TASKRUN so reap() knows to enter. Kernels
    // before 5.19 reject the flags; they get the interrupting default.
    let s: UringSetup;
    try {
      s = native.uringSetup(entries, IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    } catch (e) {
      if ((e as { errno?: number }).errno !== EINVAL) throw e;
      s = native.uringSetup(entries, 0);
    }
    this.setup = s;
    this.fd = s.fd;
    const sq = s.sq.buffer;
    this.sqFlags = new Uint32Array(sq, s.sqOff.flags, 1);
    this.sqHead = new Uint32Array(sq, s.sqOff.head, 1);
    this.sqTail = new Uint32Array(sq, s.sqOff.tail, 1);
    this.sqMask = new Uint32Array(sq, s.sqOff.ringMask, 1)[0]!;
    this.sqEntries = s.sqEntries;
    this.sqArray = new Uint32Array(sq, s.sqOff.array, s.sqEntries);
    const cq = s.cq.buffer;
    this.cqHead = new Uint32Array(cq, s.cqOff.head, 1);
    this.cqTail = new Uint32Array(cq, s.cqOff.tail, 1);
    this.cqMask = new Uint32Array(cq, s.cqOff.ringMask, 1)[0]!;
    this.cqes = new DataView(cq);
    this.cqesBase = s.cqOff.cqes;
    this.sqes = new DataView(s.sqes.buffer);
    // The SQ index array is an indirection we do not need: slot i always holds SQE i.
    for (let i = 0; i < s.sqEntries; i++) this.sqArray[i] = i;
    this.localTail = Atomics.load(this.sqTail, 0);
  }

  /** Free SQ slots. */
  sqSpace(): number {
    return this.sqEntries - ((this.localTail - Atomics.load(this.sqHead, 0)) >>> 0);
  }

  /**
   * Queue one SQE; returns 0 or -EBUSY when the SQ is full (call submit() first).
   * `addr`/`len` mean what the opcode says (iovec array + count, or fallocate length + mode).
   */
  prep(op: number, fd: number, offset: number, addr: number, len: number, opFlags: number, userData: number, sqeFlags = 0): number {
    if (this.sqSpace() === 0) return -16; // EBUSY
    const at = (this.localTail & this.sqMask) * SQE_SIZE;
    const v = this.sqes;
    v.setUint8(at, op);
    v.setUint8(at + 1, sqeFlags);
    v.setUint16(at + 2, 0, true);
    v.setInt32(at + 4, fd, true);
    v.setUint32(at + 8, offset % 0x1_0000_0000, true);
    v.setUint32(at + 12, Math.floor(offset / 0x1_0000_0000), true);
    v.setUint32(at + 16, addr % 0x1_0000_0000, true);
    v.setUint32(at + 20, Math.floor(addr / 0x1_0000_0000), true);
    v.setUint32(at + 24, len, true);
    v.setUint32(at + 28, opFlags, true);
    v.setUint32(at + 32, userData, true);
    v.setUint32(at + 36, 0, true);
    for (let o = 40; o < SQE_SIZE; o += 4) v.setUint32(at + o, 0, true);
    this.localTail = (this.localTail + 1) >>> 0;
    this.pending++;
    return 0;
  }

  /** Hand queued SQEs to the kernel with one io_uring_enter. Returns how many it took, or -errno. */
  submit(): number {
    if (this.pending === 0) return 0;
    Atomics.store(this.sqTail, 0, this.localTail);
    const rc = this.native.uringEnter(this.fd, this.pending, 0, 0);
    if (rc > 0) this.pending -= rc;
    return rc;
  }

  /** SQEs queued but not yet taken by the kernel. */
  unsubmitted(): number {
    return this.pending;
  }

  /** Completions waiting in the CQ? */
  cqReady(): boolean {
    return Atomics.load(this.cqTail, 0) !== Atomics.load(this.cqHead, 0);
  }

  /** Run `handler` for every CQE and release them. Returns the count. */
  reap(handler: CqeHandler): number {
    if (Atomics.load(this.sqFlags, 0) & IORING_SQ_TASKRUN) this.native.uringEnter(this.fd, 0, 0, IORING_ENTER_GETEVENTS);
    let head = Atomics.load(this.cqHead, 0);
    const tail = Atomics.load(this.cqTail, 0);
    let n = 0;
    while (head !== tail) {
      const at = this.cqesBase + (head & this.cqMask) * CQE_SIZE;
      const userData = this.cqes.getUint32(at, true);
      const res = this.cqes.getInt32(at + 8, true);
      head = (head + 1) >>> 0;
      n++;
      // Release the slot before the handler: it may queue new work.
      Atomics.store(this.cqHead, 0, head);
      handler(userData, res);
    }
    return n;
  }

  registerEventfd(efd: number): number {
    return this.native.uringRegisterEventfd(this.fd, efd);
  }

  registerFiles(fds: Int32Array): number {
    return this.native.uringRegisterFiles(this.fd, fds);
  }

  close(): void {
    const s = this.setup;
    this.native.munmap(s.sqes.buffer, s.sqes.addr, s.sqes.length);
    this.native.munmap(s.sq.buffer, s.sq.addr, s.sq.length);
    if (!s.singleMmap) this.native.munmap(s.cq.buffer, s.cq.addr, s.cq.length);
    this.native.close(this.fd);
  }
}
