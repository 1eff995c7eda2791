// The I/O counters one virtio-blk queue keeps, and the clock it stamps requests
// with. The layout is the contract between the writer (the BlkQueue, on its
// reactor thread) and the readers (src/metrics/counters.ts on the main thread).
//
// Memory model. One Float64Array over a SharedArrayBuffer per queue; exactly
// one writer (the reactor that runs the queue) updating it with plain loads and
// stores, no Atomics and no lock. Readers on other threads use plain loads.
// ECMAScript only promises tear-free plain access for integer element types,
// not Float64, but on x86-64 (the only target: VDUSE, vhost-user and the native
// shim are x86-64 here) V8 reads and writes an aligned Float64Array element
// with one 8-byte movsd, which the CPU performs atomically; a reader sees each
// slot's old or new value, never half of each. Slots are updated one by one, so
// a snapshot is not consistent across slots (a read may be counted in `ops`
// before its bytes are); every slot only grows, so each is monotonic on its own.
// The frontends start a queue index again only after its previous incarnation
// stopped, so the buffer never has two writers.
//
// Precision. Counts and times are doubles: counts are exact to 2^53; byte
// counts grow in multiples of 512, so they are exact to 2^62 bytes; times are
// nanoseconds, exact to 2^53 ns (104 days of summed latency) and then rounded
// to the nearest 2, 4, ... ns per addition (relative error ~2^-53 of the
// total per I/O, far below the clock's own jitter).

/** Op classes, the first index of each class's block of slots. */
export const OP_READ = 0;
export const OP_WRITE = 1;
export const OP_FLUSH = 2;
export const OP_DISCARD = 3;
export const OP_WRITE_ZEROES = 4;
/** GET_ID, unknown request types, and chains too broken to have a type */
export const OP_OTHER = 5;
export const OP_CLASSES = 6;
export const OP_NAMES = ['read', 'write', 'flush', 'discard', 'write_zeroes', 'other'] as const;
export type OpName = (typeof OP_NAMES)[number];

/** Per class: slot `OP_SLOTS * class + X`. */
export const OP_SLOTS = 4;
/** requests of the class completed with VIRTIO_BLK_S_OK */
export const X_OPS = 0;
/** data bytes of those requests (READ/WRITE: payload; DISCARD/WRITE_ZEROES: the ranges' sizes) */
export const X_BYTES = 1;
/** nanoseconds from pop to completion, summed over those requests */
export const X_TIME_NS = 2;
/** requests of the class completed with any other status (IOERR, UNSUPP) */
export const X_ERRORS = 3;

/** requests popped and not yet completed (a gauge, not a counter) */
export const Q_IO_NOW = OP_SLOTS * OP_CLASSES;
/** wall nanoseconds with at least one request in flight (Linux's io_ticks) */
export const Q_IO_TIME_NS = Q_IO_NOW + 1;
/** nanoseconds from pop to completion summed over every completed request, any class or status */
export const Q_LAT_SUM_NS = Q_IO_NOW + 2;
/**
 * Latency histogram over every completed request: LAT_BUCKETS counts, NOT
 * cumulative. Bucket k < LAT_FINITE holds latencies in (2^(k-1), 2^k] µs
 * (bucket 0: [0, 1] µs); bucket LAT_FINITE holds those above 2^(LAT_FINITE-1) µs.
 * Their sum is the number of completed requests.
 */
export const Q_LAT_BUCKETS = Q_IO_NOW + 3;
/** finite buckets: upper bounds 1 µs, 2 µs, ... 2^22 µs (4.19 s) */
export const LAT_FINITE = 23;
export const LAT_BUCKETS = LAT_FINITE + 1;
/**
 * The last finite bound in µs, computed once: V8 does not fold `2 ** (LAT_FINITE - 1)`
 * inside latencyBucket, and evaluating it per call cost ~45 ns per request.
 */
const LAT_LAST_BOUND_US = 2 ** (LAT_FINITE - 1);
/** slots in use; the buffer is rounded up to 64 doubles (512 bytes) */
export const Q_SLOTS_USED = Q_LAT_BUCKETS + LAT_BUCKETS;
export const Q_SLOTS = 64;
export const QUEUE_COUNTERS_BYTES = Q_SLOTS * 8;

/** Upper bounds of the finite buckets, in seconds. */
export const LATENCY_BOUNDS_SECONDS: readonly number[] = Array.from({ length: LAT_FINITE }, (_, k) => 2 ** k / 1e6);

/** Main thread: a zeroed counter buffer for one queue. */
export function allocQueueCounters(): SharedArrayBuffer {
  return new SharedArrayBuffer(QUEUE_COUNTERS_BYTES);
}

/**
 * Histogram bucket of a latency in milliseconds (the clock's unit). Integer
 * work only: ceil to whole µs, then the bit length of (µs - 1).
 */
export function latencyBucket(ms: number): number {
  const us = Math.ceil(ms * 1000);
  if (us <= 1) return 0;
  if (us > LAT_LAST_BOUND_US) return LAT_FINITE;
  return 32 - Math.clz32(us - 1);
}

/**
 * The time one reactor pass stamps the requests it pops with: the clock is
 * read at most once between invalidations, on first use, and every request
 * popped until the next invalidation shares that reading. The reactor begins
 * each pass with beginPass(); a BlkQueue invalidates on leaving poll() (and,
 * with a clock of its own, begins a pass on entering it). A pass that directly
 * follows a busy pass or a wake-up is seeded with the reading the reactor took
 * then, so under load the pops read no clock at all. Completions read none
 * either: the queue lists them and the reactor times them all with the one
 * reading that ends a busy pass (BlkQueue.account). So a busy pass reads the
 * clock once, plus once per queue that popped without a seed, whatever the
 * batch size.
 *
 * Why not one reading per request: performance.now() costs ~50 ns on this
 * project's machines (measured: Node 20, 2-vCPU EPYC guest, 5M calls:
 * performance.now() 50-78 ns, Date.now() 45-67 ns, process.hrtime() ~50-60 ns
 * plus an array, process.hrtime.bigint() ~55-59 ns plus a BigInt), against
 * ~155 ns for the whole device-side request at batch 32
 * (scripts/bench/blk-queue.mjs). What sharing costs: a request is timed from
 * about when its pass began to the end of the pass that completed it, an
 * error of up to a pass (sub-µs to µs); latencies below that read as 0
 * (bucket le=1e-06).
 *
 * Single thread: each reactor has its own clock, shared by its queues.
 */
/**
 * The global `performance` is a getter that Node never replaces with a value:
 * ~7 ns per access on top of now()'s ~43 ns (Node 20, worker or main thread).
 * The hot paths read it through this binding.
 */
export const perf = performance;

export class IoClock {
  private stamp = 0;
  private valid = false;
  /** first reading since beginPass(), or -1 */
  passStart = -1;

  /** Milliseconds (performance.now()'s scale, this thread's origin). */
  now(): number {
    if (!this.valid) {
      this.stamp = perf.now();
      this.valid = true;
      if (this.passStart < 0) this.passStart = this.stamp;
    }
    return this.stamp;
  }

  /** The next now() reads the clock again. */
  invalidate(): void {
    this.valid = false;
  }

  /**
   * A new reactor pass. `seedMs` ≥ 0: a reading taken just before the pass
   * (the previous pass's end, a wake-up), used as this pass's first; -1: none.
   */
  beginPass(seedMs = -1): void {
    this.stamp = seedMs;
    this.valid = seedMs >= 0;
    this.passStart = seedMs;
  }
}
