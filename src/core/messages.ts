// Messages between the control plane (main thread) and a reactor worker. All
// structured-clone-safe; fds are process-wide numbers, so they cross as-is.
import type { BdevDesc } from '../bdev/types.js';
import type { BlkParams } from '../virtio/blk.js';
import type { RegionSpec } from '../virtio/memory.js';
import type { IotlbSource } from './iotlb.js';

export interface QueueSpec {
  /** unique per reactor: "<device>/<index>" */
  id: string;
  device: string;
  /** guest memory as mapped by the main thread; the reactor makes views */
  memory: { generation: number; regions: RegionSpec[]; iotlb?: IotlbSource };
  size: number;
  /** VIRTIO_F_RING_PACKED: availAddr/usedAddr are then the driver/device event areas */
  packed?: boolean;
  /** host addresses (in this process) of the ring parts */
  descAddr: number;
  availAddr: number;
  usedAddr: number;
  eventIdx: boolean;
  indirect: boolean;
  /** where to resume: next avail index, and the used index already published
   *  (packed: index | wrap counter << 15 for each) */
  lastAvail: number;
  usedIdx: number;
  /**
   * A vhost-user in-flight region: this queue's part of it (mapped by the
   * main thread), what to run again first, oldest first (split: heads;
   * packed: first region entries of the chains), and the fetch counter to
   * continue from (virtio/inflight.ts, virtio/inflight-packed.ts).
   */
  inflight?: { addr: number; descNum: number; resubmit: number[]; nextCounter: number };
  /** -1: no kick fd, poll the ring */
  kickFd: number;
  /** -1: never interrupt */
  callFd: number;
  /** interrupt by ioctl(fd, request, &u32 arg) instead of the call eventfd (VDUSE_VQ_INJECT_IRQ) */
  irq?: { fd: number; request: number; arg: number };
  bdev: BdevDesc;
  blk: BlkParams;
  /**
   * The queue's I/O counters (layout: virtio/blk-counters.ts), allocated and
   * read by the main thread, written only by the reactor running the queue.
   * The main thread keeps one per export and queue index, so counts carry on
   * across a front-end's reconnect. Absent: the reactor counts privately.
   */
  counters?: SharedArrayBuffer;
  /** the export's interrupt coalescing settings (virtio/coalescing.ts), changed at run time by the main thread */
  coalescing?: SharedArrayBuffer;
}

export type ReactorRequest =
  | { op: 'addQueue'; queue: QueueSpec }
  | { op: 'setCall'; id: string; callFd: number }
  | { op: 'stopQueue'; id: string }
  | { op: 'queueState'; id: string }
  | { op: 'setSize'; bdev: string; sizeBytes: number }
  | { op: 'settingsChanged'; bdev: string }
  | { op: 'stats' }
  | { op: 'shutdown' };

export interface QueueStopped {
  lastAvail: number;
  usedIdx: number;
}

export interface ReactorStats {
  queues: number;
  completed: number;
  failed: number;
  iterations: number;
  sleeps: number;
}

/** reactor -> main: a reply to request `seq`, or an unsolicited event */
export type ReactorReply =
  | { seq: number; ok: true; result?: QueueStopped | ReactorStats }
  | { seq: number; ok: false; error: string }
  | { event: 'broken'; id: string; why: string }
  | { event: 'log'; level: 'info' | 'warn' | 'error'; msg: string; data?: Record<string, unknown> };

export interface ReactorInit {
  index: number;
  /** eventfd the main thread writes after posting a request, to wake a sleeping reactor */
  wakeFd: number;
  /** Int32 flag the main thread sets when requests are waiting (cheap to poll) */
  pending: SharedArrayBuffer;
  /** polling window after the last work before sleeping, µs */
  idleSpinUs: number;
  /** CPUs to pin this reactor's thread to; empty: leave it to the scheduler */
  cpus: number[];
  /** busy/idle time and sleeps (layout: reactor-counters.ts), written by the reactor only */
  counters?: SharedArrayBuffer;
  /** user bdev modules (absolute paths) to load before the loop starts, as the main thread did */
  bdevModules?: string[];
}
