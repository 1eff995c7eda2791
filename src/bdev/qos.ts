// QoS limits on a bdev (SPDK's bdev_set_qos_limit): I/O per second and bytes
// per second (all, reads, writes), 0 = unlimited, enforced across every queue
// and reactor that serves the bdev and changeable at run time. The state is a
// token bucket per limit in memory every reactor shares (desc.qos), taken
// under a spin lock held for a few arithmetic operations. A bucket holds up to
// 10 ms of its rate (at least one I/O, or 64 KiB), so a burst is short; an I/O
// larger than a full bucket still passes, leaving the bucket in debt that later
// I/O waits out, so any size gets through at the limit on average.
import { loadNative } from '../native/index.js';
import { type BdevIo, IoOp } from './types.js';

export const QOS_BYTES = 80;
/** Int32 slots */
const LOCK = 0;
const ACTIVE = 1;
/** Float64 slots: when the buckets were last filled, the four limits, their tokens */
const LAST_MS = 1;
const LIMIT = 2;
const TOKENS = 6;
export const QOS_LIMITS = ['rw_ios_per_sec', 'rw_mbytes_per_sec', 'r_mbytes_per_sec', 'w_mbytes_per_sec'] as const;
export type QosLimit = (typeof QOS_LIMITS)[number];
const MB = 1024 * 1024;
const BURST_MS = 10;
const MIN_BYTES_BURST = 64 * 1024;

/** One queue's view of its bdev's limits (each queue and reactor has its own; the state is shared). */
export class QosGate {
  private readonly i32: Int32Array;
  private readonly f64: Float64Array;
  /** after a refusal: ms until the tokens it lacked are there */
  waitMs = 0;

  constructor(
    shared: SharedArrayBuffer,
    /** a clock all threads share, in ms */
    private readonly nowMs: () => number = monotonicMs,
  ) {
    this.i32 = new Int32Array(shared, 0, 2);
    this.f64 = new Float64Array(shared, 0, QOS_BYTES / 8);
  }

  /** Any limit set? (a plain read: a change is seen at the next I/O) */
  limited(): boolean {
    return this.i32[ACTIVE] !== 0;
  }

  /** Take what the I/O needs from every bucket that applies, or nothing (then waitMs says how long to wait). */
  admit(io: BdevIo): boolean {
    const i32 = this.i32;
    const f = this.f64;
    while (Atomics.compareExchange(i32, LOCK, 0, 1) !== 0);
    const now = this.nowMs();
    const dt = now - f[LAST_MS]!;
    if (dt > 0) {
      f[LAST_MS] = now;
      for (let k = 0; k < 4; k++) {
        const rate = f[LIMIT + k]!;
        if (rate > 0) f[TOKENS + k] = Math.min(f[TOKENS + k]! + (rate * dt) / 1000, burst(k, rate));
      }
    }
    const isRead = io.op === IoOp.READ;
    const isWrite = io.op === IoOp.WRITE;
    const bytes = isRead || isWrite ? io.lenBytes : 0;
    // What each bucket must hold: a whole I/O, or all the I/O's bytes up to a full bucket.
    let wait = 0;
    wait = Math.max(wait, lack(f, 0, 1));
    if (bytes > 0) {
      wait = Math.max(wait, lack(f, 1, bytes));
      if (isRead) wait = Math.max(wait, lack(f, 2, bytes));
      if (isWrite) wait = Math.max(wait, lack(f, 3, bytes));
    }
    if (wait === 0) {
      if (f[LIMIT]! > 0) f[TOKENS] = f[TOKENS]! - 1;
      if (bytes > 0) {
        if (f[LIMIT + 1]! > 0) f[TOKENS + 1] = f[TOKENS + 1]! - bytes;
        if (isRead && f[LIMIT + 2]! > 0) f[TOKENS + 2] = f[TOKENS + 2]! - bytes;
        if (isWrite && f[LIMIT + 3]! > 0) f[TOKENS + 3] = f[TOKENS + 3]! - bytes;
      }
    }
    Atomics.store(i32, LOCK, 0);
    this.waitMs = wait;
    return wait === 0;
  }
}

function burst(k: number, rate: number): number {
  const b = (rate * BURST_MS) / 1000;
  return k === 0 ? Math.max(b, 1) : Math.max(b, MIN_BYTES_BURST);
}

/** ms until bucket k holds `need` (or is full, for an I/O larger than it); 0 if it does, or has no limit. */
function lack(f: Float64Array, k: number, need: number): number {
  const rate = f[LIMIT + k]!;
  if (rate === 0) return 0;
  const want = Math.min(need, burst(k, rate));
  const have = f[TOKENS + k]!;
  return have >= want ? 0 : ((want - have) * 1000) / rate;
}

function monotonicMs(): number {
  return loadNative().clockMonotonicUs() / 1000;
}

/** The limits as SPDK shows them (assigned_rate_limits): IOPS, and MiB/s. */
export function qosLimits(shared: SharedArrayBuffer): Record<QosLimit, number> {
  const f = new Float64Array(shared, 0, QOS_BYTES / 8);
  return {
    rw_ios_per_sec: f[LIMIT]!,
    rw_mbytes_per_sec: f[LIMIT + 1]! / MB,
    r_mbytes_per_sec: f[LIMIT + 2]! / MB,
    w_mbytes_per_sec: f[LIMIT + 3]! / MB,
  };
}

/** Set the limits given (others stay); 0 lifts one. Full buckets from now on. */
export function setQosLimits(shared: SharedArrayBuffer, limits: Partial<Record<QosLimit, number>>, nowMs: () => number = monotonicMs): void {
  const i32 = new Int32Array(shared, 0, 2);
  const f = new Float64Array(shared, 0, QOS_BYTES / 8);
  while (Atomics.compareExchange(i32, LOCK, 0, 1) !== 0);
  QOS_LIMITS.forEach((name, k) => {
    const v = limits[name];
    if (v === undefined) return;
    const rate = k === 0 ? v : v * MB;
    f[LIMIT + k] = rate;
    f[TOKENS + k] = rate > 0 ? burst(k, rate) : 0;
  });
  f[LAST_MS] = nowMs();
  const active = [0, 1, 2, 3].some((k) => f[LIMIT + k]! > 0);
  Atomics.store(i32, LOCK, 0);
  Atomics.store(i32, ACTIVE, active ? 1 : 0);
}
