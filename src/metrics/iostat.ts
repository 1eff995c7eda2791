// SPDK's bdev_get_iostat result from the queue counters. vdx counts at the
// virtio layer, per export queue, so a bdev's figures are the sum over the
// queues of the exports that use it (a layered bdev's base is not counted on
// its own). Latency ticks are nanoseconds: tick_rate is 1e9.
import { type QueueSnapshot, sumQueueCounters } from './counters.js';

export interface BdevIostat {
  name: string;
  bytes_read: number;
  num_read_ops: number;
  bytes_written: number;
  num_write_ops: number;
  bytes_unmapped: number;
  num_unmap_ops: number;
  read_latency_ticks: number;
  write_latency_ticks: number;
  unmap_latency_ticks: number;
  bytes_copied: number;
  num_copy_ops: number;
  copy_latency_ticks: number;
}

export interface IostatResult {
  tick_rate: number;
  /** CLOCK_MONOTONIC now, in ticks */
  ticks: number;
  bdevs: BdevIostat[];
}

/**
 * One entry per bdev in `bdevNames` (zeros for one no export has used), or,
 * without it, per bdev that appears in `queues`.
 */
export function bdevIostat(queues: readonly QueueSnapshot[], bdevNames?: readonly string[]): IostatResult {
  const names = bdevNames ?? [...new Set(queues.map((q) => q.bdev))];
  const bdevs = names.map((name): BdevIostat => {
    const t = sumQueueCounters(queues.filter((q) => q.bdev === name).map((q) => q.counters)).ops;
    return {
      name,
      bytes_read: t.read.bytes,
      num_read_ops: t.read.completed,
      bytes_written: t.write.bytes,
      num_write_ops: t.write.completed,
      bytes_unmapped: t.discard.bytes,
      num_unmap_ops: t.discard.completed,
      read_latency_ticks: Math.round(t.read.timeSeconds * 1e9),
      write_latency_ticks: Math.round(t.write.timeSeconds * 1e9),
      unmap_latency_ticks: Math.round(t.discard.timeSeconds * 1e9),
      // vdx bdevs have no copy operation; SPDK's clients expect the fields.
      bytes_copied: 0,
      num_copy_ops: 0,
      copy_latency_ticks: 0,
    };
  });
  return { tick_rate: 1e9, ticks: Number(process.hrtime.bigint()), bdevs };
}
