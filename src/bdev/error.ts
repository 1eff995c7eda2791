// error bdev: forwards to its base, failing, corrupting or holding the I/O it
// is told to (SPDK's bdev_error_create / bdev_error_inject_error), for testing
// what is built above it: a mirror that must survive a failed member, a guest
// that must see an I/O error for that request only. Injections live in memory
// shared by every reactor's channel, so a count of N fails N I/Os in all; the
// count is taken with a compare-and-swap, never twice. A held ("pending") I/O
// stays held until the injection is cleared, then goes to the base as if it
// had just arrived.
import { loadNative } from '../native/index.js';
import { DeferredCompletions, IoFifo } from './deferred.js';
import { ForwardChannel, layerSpec, windowInfo } from './layer.js';
import { type BdevDesc, type BdevIo, type BdevModule, type Channel, type ChannelContext, IoOp } from './types.js';

export const ERROR_TYPES = { failure: 1, pending: 2, corrupt_data: 3 } as const;
export type ErrorType = keyof typeof ERROR_TYPES;
/** io_type names as SPDK's RPC takes them, to the ops they cover */
export const IO_TYPES: Record<string, number[]> = {
  read: [IoOp.READ],
  write: [IoOp.WRITE],
  flush: [IoOp.FLUSH],
  unmap: [IoOp.DISCARD],
  write_zeroes: [IoOp.WRITE_ZEROES],
  all: [IoOp.READ, IoOp.WRITE, IoOp.FLUSH, IoOp.DISCARD, IoOp.WRITE_ZEROES],
};
const OPS = 5;
/** Int32 slots per op: error type (0 none), I/Os left (-1: until cleared), corrupt offset, corrupt value */
const STRIDE = 4;
/** Int32 slot after the ops': how many injections were cleared (a channel releases what it holds when it changes) */
const CLEARED = OPS * STRIDE;
const EIO = -5;

class ErrorChannel extends ForwardChannel {
  private readonly s: Int32Array;
  private readonly failed = new DeferredCompletions(16);
  private readonly held = new IoFifo(16);
  /** children to corrupt when their read completes, by child slot: where, and with what */
  private corrupt = new Uint8Array(64);
  private corruptAt = new Int32Array(64);
  private corruptWith = new Uint8Array(64);
  /** the clear count this channel last acted on */
  private seenCleared: number;

  constructor(base: Channel, baseDesc: BdevDesc, ctx: ChannelContext, desc: BdevDesc) {
    super(base, baseDesc, ctx, 0, desc.info.sizeBytes);
    this.s = new Int32Array(desc.shared!);
    this.seenCleared = Atomics.load(this.s, CLEARED);
  }

  override submit(io: BdevIo): number {
    const op = io.op;
    if (this.s[op * STRIDE] === 0 || !this.take(op)) return super.submit(io);
    // Read after the count was taken: the injection that count belongs to (a re-inject writes the count last).
    const type = Atomics.load(this.s, op * STRIDE);
    if (type === 0) return super.submit(io);
    if (type === ERROR_TYPES.failure) {
      io.status = EIO;
      this.failed.push(io);
      return 0;
    }
    if (type === ERROR_TYPES.pending) {
      this.held.push(io);
      return 0;
    }
    const rc = super.submit(io);
    if (rc === 0) {
      const child = this.lastChild!;
      if (child.slot >= this.corrupt.length) {
        const size = Math.max(this.poolSize, 2 * this.corrupt.length);
        const grow = <T extends Uint8Array | Int32Array>(a: T, b: T): T => (b.set(a), b);
        this.corrupt = grow(this.corrupt, new Uint8Array(size));
        this.corruptAt = grow(this.corruptAt, new Int32Array(size));
        this.corruptWith = grow(this.corruptWith, new Uint8Array(size));
      }
      // What to corrupt is the injection's as this I/O was taken, not as it may be when it completes.
      this.corrupt[child.slot] = 1;
      this.corruptAt[child.slot] = this.s[op * STRIDE + 2]!;
      this.corruptWith[child.slot] = this.s[op * STRIDE + 3]! & 0xff;
    }
    return rc;
  }

  /** One I/O of this op's injection, if any is left (shared by every channel). */
  private take(op: number): boolean {
    const at = op * STRIDE + 1;
    for (;;) {
      const left = Atomics.load(this.s, at);
      if (left < 0) return true;
      if (left === 0) return false;
      if (Atomics.compareExchange(this.s, at, left, left - 1) === left) return true;
    }
  }

  protected override baseDone(child: BdevIo): void {
    if (this.corrupt[child.slot] === 1) {
      this.corrupt[child.slot] = 0;
      if (child.status === 0) this.corruptRead(child);
    }
    this.finish(child);
  }

  /** XOR one byte of what was read (SPDK's corrupt_value at corrupt_offset); rare, so a view may be made. */
  private corruptRead(child: BdevIo): void {
    let off = this.corruptAt[child.slot]!;
    const value = this.corruptWith[child.slot]!;
    for (let i = 0; i < child.niov; i++) {
      const len = child.iov[2 * i + 1]!;
      if (off < len) {
        const b = new Uint8Array(loadNative().viewAddress(child.iov[2 * i]! + off, 1));
        b[0]! ^= value;
        return;
      }
      off -= len;
    }
  }

  override poll(): number {
    this.raiseDeferred();
    return this.failed.size() > 0 ? this.failed.drain() : 0;
  }

  /** A queue on this bdev is stopping: held I/O fails now (EIO) instead of waiting for a clear that may never come. */
  stopping(): void {
    for (let io = this.held.shift(); io; io = this.held.shift()) {
      io.status = EIO;
      this.failed.push(io);
    }
  }

  override inflight(): number {
    return super.inflight() + this.failed.size() + this.held.size();
  }

  /** A cleared injection lets what it held go on to the base. */
  settingsChanged(): void {
    const cleared = Atomics.load(this.s, CLEARED);
    if (cleared === this.seenCleared) return;
    this.seenCleared = cleared;
    for (let io = this.held.shift(); io; io = this.held.shift()) {
      const rc = super.submit(io);
      if (rc < 0) {
        io.status = rc;
        this.failed.push(io);
      }
    }
  }

  override close(): void {
    // Held I/O belongs to a queue that broke (a stopping one waits for it): dropped, its memory may be gone.
    while (this.held.shift());
    super.close();
  }
}

export const errorBdev: BdevModule = {
  type: 'error',
  keys: {
    name: 'bdev name (required; bdev_error_create names it EE_<base>)',
    base: 'the bdev it forwards to (required); claimed for writing while the error bdev exists',
  },
  baseKeys: ['base'],
  normalize: (spec) => layerSpec('error', spec, errorBdev.keys),
  create(spec, bases): BdevDesc {
    const base = bases[0]!;
    return { info: windowInfo(spec.name!, 'error', base, base.info.sizeBytes), params: {}, bases: [base], shared: new SharedArrayBuffer((OPS * STRIDE + 1) * 4) };
  },
  open(desc: BdevDesc, ctx: ChannelContext): Channel {
    const base = desc.bases![0]!;
    return new ErrorChannel(ctx.openBase(base), base, ctx, desc);
  },
  describe(desc) {
    const s = new Int32Array(desc.shared!);
    const names = Object.fromEntries(Object.entries(ERROR_TYPES).map(([k, v]) => [v, k]));
    const injected: Record<string, unknown> = {};
    for (const [ioType, ops] of Object.entries(IO_TYPES)) {
      if (ops.length !== 1) continue;
      const at = ops[0]! * STRIDE;
      const left = s[at + 1]!;
      if (s[at] !== 0 && left !== 0) injected[ioType] = { error_type: names[s[at]!], remaining: left < 0 ? 'until cleared' : left };
    }
    return { productName: 'error', driverSpecific: { error: { base_bdev: desc.bases![0]!.info.name, injected } } };
  },
  destroy(): void {},
};

export interface Injection {
  ioType: string;
  /** 'clear' ends every injection (io_type clear does too) */
  errorType: ErrorType | 'clear';
  /** I/Os to affect; 0: until cleared */
  num: number;
  corruptOffset: number;
  corruptValue: number;
}

/** Set or clear an injection (bdev_error_inject_error); the caller then tells the reactors (settingsChanged). */
export function inject(desc: BdevDesc, j: Injection): void {
  const s = new Int32Array(desc.shared!);
  if (j.ioType === 'clear' || j.errorType === 'clear') {
    for (let op = 0; op < OPS; op++) {
      Atomics.store(s, op * STRIDE + 1, 0);
      Atomics.store(s, op * STRIDE, 0);
    }
    Atomics.add(s, CLEARED, 1);
    return;
  }
  const ops = IO_TYPES[j.ioType];
  if (!ops) throw new Error(`io_type=${j.ioType} is not one of ${[...Object.keys(IO_TYPES), 'clear'].join(', ')}`);
  const type = ERROR_TYPES[j.errorType];
  if (type === undefined) throw new Error(`error_type=${j.errorType} is not one of ${Object.keys(ERROR_TYPES).join(', ')}`);
  if (type === ERROR_TYPES.corrupt_data && ops.some((op) => op !== IoOp.READ)) {
    throw new Error(`error_type=corrupt_data applies to reads here (io_type=read): corrupting a write would change the data in the guest's memory too`);
  }
  for (const op of ops) {
    // The count last: a channel that sees it sees the type and what to corrupt.
    Atomics.store(s, op * STRIDE + 1, 0);
    Atomics.store(s, op * STRIDE, type);
    Atomics.store(s, op * STRIDE + 2, j.corruptOffset);
    Atomics.store(s, op * STRIDE + 3, j.corruptValue);
    Atomics.store(s, op * STRIDE + 1, j.num === 0 ? -1 : j.num);
  }
}
