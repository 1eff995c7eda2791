// Main-thread side of the I/O counters: the buffers the reactors count into,
// one per (export, queue index) for the export's life, and plain-object
// snapshots of them for /metrics and bdev_get_iostat.
//
// The layout belongs to its writer, virtio/blk-counters.ts (so the data path
// imports nothing from here); it is re-exported for readers. Reading is
// lock-free: plain loads of slots a single reactor writes with plain stores
// (see the memory-model note there).
import type { QueueCounterSource } from '../core/reactor-pool.js';
import {
  LAT_BUCKETS,
  OP_CLASSES,
  OP_NAMES,
  OP_SLOTS,
  type OpName,
  Q_IO_NOW,
  Q_IO_TIME_NS,
  Q_LAT_BUCKETS,
  Q_LAT_SUM_NS,
  Q_SLOTS,
  QUEUE_COUNTERS_BYTES,
  X_BYTES,
  X_ERRORS,
  X_OPS,
  X_TIME_NS,
} from '../virtio/blk-counters.js';

export * from '../virtio/blk-counters.js';
export { type ReactorCounters } from '../core/reactor-counters.js';

export type Frontend = 'vhost-user' | 'vduse';

/** One op class of one queue. */
export interface OpCounters {
  /** completed with VIRTIO_BLK_S_OK */
  completed: number;
  /** data bytes of those (DISCARD / WRITE_ZEROES: the ranges' sizes) */
  bytes: number;
  /** pop-to-completion time summed over those */
  timeSeconds: number;
  /** completed with another status */
  errors: number;
}

export interface QueueCounters {
  ops: Record<OpName, OpCounters>;
  /** requests popped and not completed */
  inFlight: number;
  /** wall time with at least one request in flight */
  ioTimeSeconds: number;
  /** every completed request, any class or status */
  latency: {
    /** LAT_BUCKETS counts, not cumulative: (2^(k-1), 2^k] µs, the last one above LATENCY_BOUNDS_SECONDS' end */
    buckets: number[];
    sumSeconds: number;
    /** the buckets' sum */
    count: number;
  };
}

/** A queue's counters with what identifies it. */
export interface QueueSnapshot {
  export: string;
  bdev: string;
  frontend: Frontend;
  queue: number;
  counters: QueueCounters;
}

function emptyOps(): Record<OpName, OpCounters> {
  const ops = {} as Record<OpName, OpCounters>;
  for (const n of OP_NAMES) ops[n] = { completed: 0, bytes: 0, timeSeconds: 0, errors: 0 };
  return ops;
}

export function emptyQueueCounters(): QueueCounters {
  return { ops: emptyOps(), inFlight: 0, ioTimeSeconds: 0, latency: { buckets: new Array<number>(LAT_BUCKETS).fill(0), sumSeconds: 0, count: 0 } };
}

/** A snapshot of one queue's buffer (made by allocQueueCounters). */
export function readQueueCounters(sab: SharedArrayBuffer): QueueCounters {
  if (sab.byteLength < QUEUE_COUNTERS_BYTES) throw new Error(`queue counters: buffer of ${sab.byteLength} bytes, need ${QUEUE_COUNTERS_BYTES}`);
  const c = new Float64Array(sab, 0, Q_SLOTS);
  const out = emptyQueueCounters();
  for (let k = 0; k < OP_CLASSES; k++) {
    const o = k * OP_SLOTS;
    out.ops[OP_NAMES[k]!] = { completed: c[o + X_OPS]!, bytes: c[o + X_BYTES]!, timeSeconds: c[o + X_TIME_NS]! / 1e9, errors: c[o + X_ERRORS]! };
  }
  out.inFlight = c[Q_IO_NOW]!;
  out.ioTimeSeconds = c[Q_IO_TIME_NS]! / 1e9;
  let count = 0;
  for (let k = 0; k < LAT_BUCKETS; k++) {
    const n = c[Q_LAT_BUCKETS + k]!;
    out.latency.buckets[k] = n;
    count += n;
  }
  out.latency.count = count;
  out.latency.sumSeconds = c[Q_LAT_SUM_NS]! / 1e9;
  return out;
}

/** Field by field sum (an export's queues, a bdev's exports). */
export function sumQueueCounters(list: readonly QueueCounters[]): QueueCounters {
  const t = emptyQueueCounters();
  for (const q of list) {
    for (const n of OP_NAMES) {
      const a = t.ops[n];
      const b = q.ops[n];
      a.completed += b.completed;
      a.bytes += b.bytes;
      a.timeSeconds += b.timeSeconds;
      a.errors += b.errors;
    }
    t.inFlight += q.inFlight;
    t.ioTimeSeconds += q.ioTimeSeconds;
    for (let k = 0; k < LAT_BUCKETS; k++) t.latency.buckets[k]! += q.latency.buckets[k]!;
    t.latency.sumSeconds += q.latency.sumSeconds;
    t.latency.count += q.latency.count;
  }
  return t;
}

interface Entry {
  bdev: string;
  frontend: Frontend;
  sab: SharedArrayBuffer;
}

/**
 * The daemon's counter buffers, keyed by export name and queue index. Give it
 * to the frontends (SessionContext.counters, VduseDeviceContext.counters): a
 * front-end that reconnects, or a queue restarted after a memory-table change,
 * gets the buffer its predecessor counted into, so every series is monotonic
 * per export and queue. Main thread only.
 */
export class CounterRegistry implements QueueCounterSource {
  private readonly exports = new Map<string, Map<number, Entry>>();

  /**
   * The buffer for queue `queueIndex` of `exportName`, made on first use. An
   * export name that comes back with another bdev or frontend is another
   * device: it starts from zero.
   */
  forQueue(exportName: string, bdevName: string, frontend: Frontend, queueIndex: number): SharedArrayBuffer {
    let qs = this.exports.get(exportName);
    if (!qs) this.exports.set(exportName, (qs = new Map()));
    let e = qs.get(queueIndex);
    if (!e || e.bdev !== bdevName || e.frontend !== frontend) {
      if (e) qs.clear(); // its other queues belong to the old device too
      e = { bdev: bdevName, frontend, sab: new SharedArrayBuffer(QUEUE_COUNTERS_BYTES) };
      qs.set(queueIndex, e);
    }
    return e.sab;
  }

  /** The export is gone: drop its series. (A queue still running keeps counting into a buffer nobody reads.) */
  forget(exportName: string): void {
    this.exports.delete(exportName);
  }

  /** Every queue's counters, by export name then queue index. */
  snapshot(): QueueSnapshot[] {
    const out: QueueSnapshot[] = [];
    for (const name of [...this.exports.keys()].sort()) {
      const qs = this.exports.get(name)!;
      for (const i of [...qs.keys()].sort((a, b) => a - b)) {
        const e = qs.get(i)!;
        out.push({ export: name, bdev: e.bdev, frontend: e.frontend, queue: i, counters: readQueueCounters(e.sab) });
      }
    }
    return out;
  }
}
