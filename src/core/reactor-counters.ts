// Per-reactor counters: busy and idle time, sleeps and passes, in a
// SharedArrayBuffer the main thread allocates (ReactorHandle) and the reactor
// writes with plain stores (one writer; see virtio/blk-counters.ts for why
// plain Float64 stores read back whole on x86-64).
//
// Busy is the time from the first clock reading of a pass that did work (the
// first request popped or completed) to the end of that pass, flushes and
// interrupts included; everything else is idle: passes that found nothing,
// spinning and sleeping in epoll. A pass costs one clock reading more than the
// queues' own, and only when it did work; idle passes read no clock.
//
// A reactor asleep in epoll writes nothing, so before sleeping it publishes
// the time up to which its idle time is accounted (R_SLEEP_SINCE_MS, on the
// process-wide monotonic clock) and the reader adds the time since then.
// Around a wake-up the reader may briefly see less than before;
// ReactorCounterReader keeps its values monotonic.

/** nanoseconds in passes that did work */
export const R_BUSY_NS = 0;
/** nanoseconds in passes that did not, and asleep */
export const R_IDLE_NS = 1;
/** epoll sleeps */
export const R_SLEEPS = 2;
/** passes over control, queues and channels (brought up to date at busy passes and sleeps) */
export const R_ITERATIONS = 3;
/** while asleep: monotonicMs() up to which R_IDLE_NS is accounted; 0 while awake */
export const R_SLEEP_SINCE_MS = 4;
export const R_SLOTS = 8;

export function allocReactorCounters(): SharedArrayBuffer {
  return new SharedArrayBuffer(R_SLOTS * 8);
}

/**
 * CLOCK_MONOTONIC in milliseconds: the same clock on every thread (unlike
 * performance.now(), whose origin is each thread's start). Allocates a BigInt:
 * not for the hot path.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export interface ReactorCounters {
  reactor: number;
  busySeconds: number;
  idleSeconds: number;
  sleeps: number;
  iterations: number;
}

/** Main thread: reads one reactor's counters, never reporting less than last time. */
export class ReactorCounterReader {
  private readonly c: Float64Array;
  private last: ReactorCounters;

  constructor(
    readonly reactor: number,
    sab: SharedArrayBuffer,
  ) {
    this.c = new Float64Array(sab, 0, R_SLOTS);
    this.last = { reactor, busySeconds: 0, idleSeconds: 0, sleeps: 0, iterations: 0 };
  }

  read(): ReactorCounters {
    const c = this.c;
    // Read order matters: idle before sleep-since (the reactor clears
    // sleep-since before adding the sleep to idle), so a sleep is never counted twice.
    let idleNs = c[R_IDLE_NS]!;
    const since = c[R_SLEEP_SINCE_MS]!;
    if (since > 0) idleNs += Math.max(0, monotonicMs() - since) * 1e6;
    const l = this.last;
    this.last = {
      reactor: this.reactor,
      busySeconds: Math.max(l.busySeconds, c[R_BUSY_NS]! / 1e9),
      idleSeconds: Math.max(l.idleSeconds, idleNs / 1e9),
      sleeps: Math.max(l.sleeps, c[R_SLEEPS]!),
      iterations: Math.max(l.iterations, c[R_ITERATIONS]!),
    };
    return { ...this.last };
  }
}
