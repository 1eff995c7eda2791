// Interrupt coalescing as SPDK's vhost target offers it
// (vhost_controller_set_coalescing; lib/vhost/rte_vhost_user.c): each queue
// measures its completion rate over 10 ms intervals; above `iops_threshold`
// it holds interrupts back, at most one per
//   delay = delay_base_us * (rate - threshold) / threshold
// so a driver that sleeps until interrupted wakes for more completions at a
// time. Below the threshold the delay is 0 (SPDK keeps its last delay and
// counts on across intervals until the threshold is crossed again, which
// leaves a burst's delay on the slow load after it).
//
// The settings live in a SharedArrayBuffer the export owns: the control plane
// changes them at run time and the queues read them on their reactors.

/** SPDK_VHOST_STATS_CHECK_INTERVAL_MS */
export const COALESCING_INTERVAL_MS = 10;
/** SPDK's defaults: off, and the threshold it reports until one is set */
export const DEFAULT_DELAY_BASE_US = 0;
export const DEFAULT_IOPS_THRESHOLD = 60_000;
/** The lowest threshold that leaves at least one request per interval (SPDK refuses lower). */
export const MIN_IOPS_THRESHOLD = 1000 / COALESCING_INTERVAL_MS;
/** A longer base delay holds an interrupt for seconds at twice the threshold. */
export const MAX_DELAY_BASE_US = 1_000_000;

const S_DELAY_BASE_US = 0;
const S_IOPS_THRESHOLD = 1;
const S_SLOTS = 2;

export interface CoalescingSettings {
  delayBaseUs: number;
  iopsThreshold: number;
}

/** Why these settings cannot be used, or undefined. */
export function coalescingProblem(s: CoalescingSettings): string | undefined {
  if (!Number.isInteger(s.delayBaseUs) || s.delayBaseUs < 0 || s.delayBaseUs > MAX_DELAY_BASE_US) {
    return `delay_base_us=${s.delayBaseUs} must be an integer in 0..${MAX_DELAY_BASE_US} (0: interrupts are not held back)`;
  }
  if (!Number.isInteger(s.iopsThreshold) || s.iopsThreshold < MIN_IOPS_THRESHOLD || s.iopsThreshold > 0xffff_ffff) {
    return `iops_threshold=${s.iopsThreshold} must be an integer of at least ${MIN_IOPS_THRESHOLD} (the rate is measured over ${COALESCING_INTERVAL_MS} ms, so a lower one rounds to no request per interval)`;
  }
  return undefined;
}

export function newCoalescingBuffer(s: CoalescingSettings): SharedArrayBuffer {
  const buf = new SharedArrayBuffer(S_SLOTS * 4);
  writeCoalescing(buf, s);
  return buf;
}

export function writeCoalescing(buf: SharedArrayBuffer, s: CoalescingSettings): void {
  const problem = coalescingProblem(s);
  if (problem) throw new Error(problem);
  const a = new Uint32Array(buf);
  // Threshold first: a reader that sees the new base sees a threshold that goes with it.
  Atomics.store(a, S_IOPS_THRESHOLD, s.iopsThreshold);
  Atomics.store(a, S_DELAY_BASE_US, s.delayBaseUs);
}

export function readCoalescing(buf: SharedArrayBuffer): CoalescingSettings {
  const a = new Uint32Array(buf);
  return { delayBaseUs: Atomics.load(a, S_DELAY_BASE_US), iopsThreshold: Atomics.load(a, S_IOPS_THRESHOLD) };
}

/**
 * One queue's coalescing state, on its reactor. The queue asks it, whenever
 * the driver wants an interrupt or one is still owed, whether to send it now
 * (due); before the reactor sleeps, and when the queue stops, whatever is
 * owed goes (takeOwed). The rate comes from the queue's completion count, so
 * counting costs the hot path nothing.
 */
export class IrqCoalescer {
  private readonly settings: Uint32Array | undefined;
  /** the interval being measured: its start and the completion count then; -1: none yet */
  private intervalStartMs = -1;
  private intervalStartCount = 0;
  private delayMs = 0;
  /** no interrupt before this (the last one sent plus the delay) */
  private nextIrqMs = 0;
  /** the driver asked for an interrupt we held back */
  private owed = false;

  constructor(settings: SharedArrayBuffer | undefined) {
    this.settings = settings ? new Uint32Array(settings) : undefined;
  }

  /** Coalescing is on: the queue must ask. A plain read: a change is seen within a pass or two. */
  get enabled(): boolean {
    return this.settings !== undefined && this.settings[S_DELAY_BASE_US] !== 0;
  }

  get isOwed(): boolean {
    return this.owed;
  }

  /** When the owed interrupt falls due (a clock reading), or -1 when none is owed. */
  get owedDueMs(): number {
    return this.owed ? this.nextIrqMs : -1;
  }

  /**
   * The driver wants an interrupt (or one is owed): may it go at `nowMs`,
   * with `completed` requests completed on the queue so far? When not, it is
   * owed until a later call, or takeOwed().
   */
  due(nowMs: number, completed: number): boolean {
    if (this.intervalStartMs < 0 || nowMs - this.intervalStartMs >= COALESCING_INTERVAL_MS) this.newInterval(nowMs, completed);
    if (nowMs < this.nextIrqMs && this.enabled) {
      this.owed = true;
      return false;
    }
    this.owed = false;
    this.nextIrqMs = nowMs + this.delayMs;
    return true;
  }

  /** An interrupt is owed: it goes now (the reactor is going to sleep, the queue stops). */
  takeOwed(nowMs: number): boolean {
    if (!this.owed) return false;
    this.owed = false;
    this.nextIrqMs = nowMs + this.delayMs;
    return true;
  }

  private newInterval(nowMs: number, completed: number): void {
    const s = this.settings;
    const base = s ? s[S_DELAY_BASE_US]! : 0;
    const threshold = s ? s[S_IOPS_THRESHOLD]! : 0;
    // The rate over the interval just ended; an interval asked about late (no
    // interrupt was wanted for a while) is longer, and divides by its length.
    let delayMs = 0;
    if (this.intervalStartMs >= 0 && base !== 0 && threshold > 0) {
      const iops = ((completed - this.intervalStartCount) * 1000) / (nowMs - this.intervalStartMs);
      if (iops > threshold) delayMs = (base * (iops - threshold)) / threshold / 1000;
    }
    this.delayMs = delayMs;
    this.intervalStartMs = nowMs;
    this.intervalStartCount = completed;
    // A delay that shrank applies at once.
    if (this.nextIrqMs > nowMs + delayMs) this.nextIrqMs = nowMs + delayMs;
  }
}
