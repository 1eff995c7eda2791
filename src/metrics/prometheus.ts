// Prometheus text exposition (format 0.0.4) of the reactors' I/O counters.
//
// Why not prom-client (the npm registry's Prometheus client, 15.x): its model
// is a registry of metric objects that the code being measured updates
// (counter.inc(), histogram.observe()) on the thread that serves /metrics. Here
// the values are written by reactor threads into SharedArrayBuffers with plain
// stores and no lock, and the main thread only reads them at scrape time; the
// prom-client way would be a collect() callback per family that copies the
// snapshot into its objects (label lookups and allocations per scrape) just to
// print text, plus a dependency for ~150 lines of formatting. The format itself
// is small and stable: https://prometheus.io/docs/instrumenting/exposition_formats/
// (HELP and TYPE once per family, before its samples; all samples of a family
// together; label values with \ " and newline escaped). The unit tests run
// `promtool check metrics` over this output.
//
// Names and meanings follow node_exporter's diskstats collector where one
// exists (node_disk_*, from Linux's /proc/diskstats), per export and queue.
// Differences from Linux, all deliberate:
// - WRITE_ZEROES is not folded into writes (Linux accounts REQ_OP_WRITE_ZEROES
//   as a write): node_disk_written_bytes_total is data the guest sent; zeroing
//   has its own vdx_write_zeroes_* families.
// - "completed" counts requests that completed with VIRTIO_BLK_S_OK; failed
//   ones are in vdx_io_errors_total{op}, and their time is left out of
//   node_disk_*_time_seconds_total (it is in the latency histogram).
// - Times run from the request's pop off the ring to its completion, stamped
//   once per reactor pass (virtio/blk-counters.ts IoClock): resolution of a
//   pass, about a microsecond.
// - node_disk_io_time_seconds_total (wall time with a request in flight) is
//   brought up to date when a request starts or completes, as Linux's io_ticks
//   are; a queue with one stuck request shows it when the next one moves.
// - Nothing is merged, so there are no *_merged_total families.
import type { ReactorCounters } from '../core/reactor-counters.js';
import { LAT_BUCKETS, LATENCY_BOUNDS_SECONDS, type QueueCounters, type QueueSnapshot, sumQueueCounters } from './counters.js';

export interface MetricsSnapshot {
  queues: readonly QueueSnapshot[];
  reactors: readonly ReactorCounters[];
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Label value escaping (backslash, double quote, line feed), per the text format. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** HELP text escaping (backslash, line feed). */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value as Go's ParseFloat reads it. */
export function formatValue(v: number): string {
  if (Number.isFinite(v)) return String(v);
  if (Number.isNaN(v)) return 'NaN';
  return v > 0 ? '+Inf' : '-Inf';
}

function labels(pairs: readonly (readonly [string, string])[]): string {
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(v)}"`).join(',')}}`;
}

type Sample = readonly [suffix: string, labels: string, value: number];

class Writer {
  private readonly lines: string[] = [];

  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string, samples: readonly Sample[]): void {
    this.lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    for (const [suffix, l, v] of samples) this.lines.push(`${name}${suffix}${l} ${formatValue(v)}`);
  }

  text(): string {
    return this.lines.length ? `${this.lines.join('\n')}\n` : '';
  }
}

interface QueueFamily {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  value: (c: QueueCounters) => number;
}

const SECTOR = 512;

const QUEUE_FAMILIES: readonly QueueFamily[] = [
  { name: 'node_disk_reads_completed_total', type: 'counter', help: 'Reads completed successfully.', value: (c) => c.ops.read.completed },
  { name: 'node_disk_read_bytes_total', type: 'counter', help: 'Bytes read successfully.', value: (c) => c.ops.read.bytes },
  { name: 'node_disk_read_time_seconds_total', type: 'counter', help: 'Seconds spent by all successful reads, from pop off the ring to completion.', value: (c) => c.ops.read.timeSeconds },
  { name: 'node_disk_writes_completed_total', type: 'counter', help: 'Writes completed successfully (WRITE_ZEROES not included).', value: (c) => c.ops.write.completed },
  { name: 'node_disk_written_bytes_total', type: 'counter', help: 'Bytes written successfully (WRITE_ZEROES not included).', value: (c) => c.ops.write.bytes },
  { name: 'node_disk_write_time_seconds_total', type: 'counter', help: 'Seconds spent by all successful writes, from pop off the ring to completion.', value: (c) => c.ops.write.timeSeconds },
  { name: 'node_disk_discards_completed_total', type: 'counter', help: 'Discards completed successfully.', value: (c) => c.ops.discard.completed },
  { name: 'node_disk_discarded_sectors_total', type: 'counter', help: 'Sectors (512 bytes) discarded successfully.', value: (c) => c.ops.discard.bytes / SECTOR },
  { name: 'node_disk_discard_time_seconds_total', type: 'counter', help: 'Seconds spent by all successful discards.', value: (c) => c.ops.discard.timeSeconds },
  { name: 'node_disk_flush_requests_total', type: 'counter', help: 'Flush requests completed successfully.', value: (c) => c.ops.flush.completed },
  { name: 'node_disk_flush_requests_time_seconds_total', type: 'counter', help: 'Seconds spent by all successful flush requests.', value: (c) => c.ops.flush.timeSeconds },
  { name: 'node_disk_io_now', type: 'gauge', help: 'Requests popped off the ring and not yet completed.', value: (c) => c.inFlight },
  { name: 'node_disk_io_time_seconds_total', type: 'counter', help: 'Seconds with at least one request in flight (updated as requests start and complete).', value: (c) => c.ioTimeSeconds },
  { name: 'vdx_write_zeroes_completed_total', type: 'counter', help: 'WRITE_ZEROES requests completed successfully.', value: (c) => c.ops.write_zeroes.completed },
  { name: 'vdx_write_zeroes_bytes_total', type: 'counter', help: 'Bytes zeroed by successful WRITE_ZEROES requests.', value: (c) => c.ops.write_zeroes.bytes },
  { name: 'vdx_write_zeroes_time_seconds_total', type: 'counter', help: 'Seconds spent by all successful WRITE_ZEROES requests.', value: (c) => c.ops.write_zeroes.timeSeconds },
  { name: 'vdx_other_requests_total', type: 'counter', help: 'Requests of other types (GET_ID) completed successfully.', value: (c) => c.ops.other.completed },
];

const ERROR_OPS = ['read', 'write', 'flush', 'discard', 'write_zeroes', 'other'] as const;

/** The exposition of one snapshot (CounterRegistry.snapshot(), ReactorPool.reactorCounters()). */
export function renderPrometheus(s: MetricsSnapshot): string {
  const w = new Writer();
  const queueLabels = s.queues.map((q) => [
    ['export', q.export],
    ['bdev', q.bdev],
    ['frontend', q.frontend],
    ['queue', String(q.queue)],
  ] as const);
  for (const f of QUEUE_FAMILIES) {
    w.family(f.name, f.type, f.help, s.queues.map((q, i) => ['', labels(queueLabels[i]!), f.value(q.counters)] as const));
  }
  const errors: Sample[] = [];
  s.queues.forEach((q, i) => {
    for (const op of ERROR_OPS) errors.push(['', labels([...queueLabels[i]!, ['op', op]]), q.counters.ops[op].errors]);
  });
  w.family('vdx_io_errors_total', 'counter', 'Requests completed with a status other than OK (IOERR, UNSUPP), by op; "other" includes chains too broken to have a type.', errors);

  // The histogram is per export: its queues summed, in the order they come.
  const byExport = new Map<string, { q: QueueSnapshot; list: QueueCounters[] }>();
  for (const q of s.queues) {
    const key = `${q.export}\0${q.bdev}\0${q.frontend}`;
    const e = byExport.get(key);
    if (e) e.list.push(q.counters);
    else byExport.set(key, { q, list: [q.counters] });
  }
  const hist: Sample[] = [];
  for (const { q, list } of byExport.values()) {
    const t = sumQueueCounters(list).latency;
    const base = [
      ['export', q.export],
      ['bdev', q.bdev],
      ['frontend', q.frontend],
    ] as const;
    let cum = 0;
    for (let k = 0; k < LAT_BUCKETS; k++) {
      cum += t.buckets[k]!;
      const le = k < LATENCY_BOUNDS_SECONDS.length ? formatValue(LATENCY_BOUNDS_SECONDS[k]!) : '+Inf';
      hist.push(['_bucket', labels([...base, ['le', le]]), cum]);
    }
    hist.push(['_sum', labels(base), t.sumSeconds], ['_count', labels(base), cum]);
  }
  w.family('vdx_io_latency_seconds', 'histogram', 'Request latency from pop off the ring to completion, every request of the export (any type or status).', hist);

  const rl = s.reactors.map((r) => labels([['reactor', String(r.reactor)]]));
  w.family('vdx_reactor_busy_seconds_total', 'counter', 'Seconds a reactor spent in passes that found work.', s.reactors.map((r, i) => ['', rl[i]!, r.busySeconds] as const));
  w.family('vdx_reactor_idle_seconds_total', 'counter', 'Seconds a reactor spent polling without work or asleep.', s.reactors.map((r, i) => ['', rl[i]!, r.idleSeconds] as const));
  w.family('vdx_reactor_sleeps_total', 'counter', 'Times a reactor went to sleep in epoll.', s.reactors.map((r, i) => ['', rl[i]!, r.sleeps] as const));
  w.family('vdx_reactor_iterations_total', 'counter', 'Passes a reactor made over its queues and channels.', s.reactors.map((r, i) => ['', rl[i]!, r.iterations] as const));
  return w.text();
}
