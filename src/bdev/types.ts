// Bdev contracts (the SPDK model): the main thread keeps serialisable
// descriptions; each reactor opens its own channel on a bdev. Bdevs see host
// addresses and lengths, never virtio.

export const IoOp = {
  READ: 0,
  WRITE: 1,
  FLUSH: 2,
  DISCARD: 3,
  WRITE_ZEROES: 4,
} as const;
export type IoOpCode = (typeof IoOp)[keyof typeof IoOp];

/** Most data segments one I/O carries (virtio-blk seg_max is derived from it). */
export const MAX_IOV = 256;

/**
 * One I/O, preallocated by its owner and reused: no allocation per request.
 * `done` is bound once by the owner; `ctx` carries the owner's request.
 */
export class BdevIo {
  op: IoOpCode = IoOp.READ;
  offsetBytes = 0;
  lenBytes = 0;
  /** WRITE_ZEROES may deallocate (punch a hole) instead of writing zeroes */
  unmap = false;
  niov = 0;
  /** (hostAddr, lenBytes) pairs */
  readonly iov = new Float64Array(2 * MAX_IOV);
  /** 0 or -errno, set before done() runs */
  status = 0;
  /** index of this I/O in its owner's table; also the io_uring user_data */
  slot = 0;
  ctx: unknown = undefined;
  done: (io: BdevIo) => void = () => {};
}

/**
 * A reactor's handle on a bdev.
 * submit() returns 0 or -errno; after 0, io.done runs exactly once, from a later
 * poll() on the same thread, never inside submit().
 */
export interface Channel {
  submit(io: BdevIo): number;
  /** Reap completions; returns how many ran (0 = idle). */
  poll(): number;
  /** I/Os submitted and not yet completed. */
  inflight(): number;
  /**
   * I/Os the kernel has accepted and will signal notifyFd for when they
   * complete; 0 for channels that complete on their own. A reactor may sleep
   * on notifyFd only while this is above 0.
   */
  kernelInflight(): number;
  /**
   * Read data reaches guest memory from user space after submit() returned
   * (librbd's threads, or this channel's own poll() as replies arrive): a
   * stopping queue must then wait for its in-flight I/O even when broken,
   * before its memory is unmapped. Channels that copy inside submit() (malloc)
   * or whose transfers the kernel makes (io_uring) leave it unset.
   */
  readonly copiesLater?: boolean;
  /** An eventfd that becomes readable when poll() has work, for the reactor's epoll; -1 if none. */
  readonly notifyFd: number;
  /** Drain notifyFd after a wake-up. */
  clearNotify(): void;
  /**
   * Optional: the main thread changed the bdev's shared settings (desc.shared)
   * and asks this channel to act on them now (e.g. release I/O it holds); the
   * reactor calls it from its loop.
   */
  settingsChanged?(): void;
  /**
   * Optional: a queue that uses this channel (directly or through layers) is
   * stopping. What the channel holds back with no end of its own (an error
   * bdev's pending I/O) must complete now, with an error, or the stop would
   * wait for it forever.
   */
  stopping?(): void;
  close(): void;
}

/** What every bdev reports, for config spaces and listings. */
export interface BdevInfo {
  name: string;
  type: string;
  /** logical block size in bytes (512 or 4096) */
  blockSize: number;
  sizeBytes: number;
  readonly: boolean;
  caps: { flush: boolean; discard: boolean; writeZeroes: boolean };
  /** largest DISCARD / WRITE_ZEROES range, bytes */
  maxDiscardBytes: number;
  /**
   * The bdev's channels are not coherent with each other, so all its I/O must
   * stay on one reactor: e.g. an NBD server without multi-conn, where a FLUSH
   * on one connection does not cover writes replied on another.
   */
  singleReactor?: boolean;
  /**
   * The data lives in this process's memory (malloc): it dies with vdx, so a
   * device a later vdx finds left over from this one is not served again.
   */
  volatile?: boolean;
}

/** What a reactor gives the channels it opens. */
export interface ChannelContext {
  /** Log through the reactor to the daemon's logger (a channel has none of its own in a worker). */
  log(level: 'info' | 'warn' | 'error', msg: string, data?: Record<string, unknown>): void;
  /**
   * A layer's channel on one of its bases (one of desc.bases), on this
   * reactor: shared with every other user of that base here, polled by the
   * reactor (so its completions run from the reactor's pass, never inside the
   * layer's submit). Give it back with closeBase, once, from close().
   */
  openBase(base: BdevDesc): Channel;
  closeBase(base: BdevDesc): void;
}

/** A bdev as the main thread keeps it: structured-clone-safe, sent to reactors. */
export interface BdevDesc {
  info: BdevInfo;
  /** module-specific fields (paths, fds, flags) */
  params: Record<string, string | number | boolean>;
  /** a layer's base bdevs, in the order of the module's baseKeys */
  bases?: BdevDesc[];
  /**
   * Memory every reactor's channel on this bdev sees (it is shared, not copied,
   * when the description is sent): settings changed at run time (delay's
   * latencies, error injection), and counters all channels draw from.
   */
  shared?: SharedArrayBuffer;
  /** QoS limits and their buckets (bdev/qos.ts), given to every bdev by the registry */
  qos?: SharedArrayBuffer;
}

/** A bdev type: a plain function table, listed in registry.ts (nothing registers itself). */
export interface BdevModule {
  readonly type: string;
  /** Keys accepted in `type:key=value,...` specs, with a one-line meaning each (for errors and --help). */
  readonly keys: Record<string, string>;
  /**
   * A layer: the keys whose values name the bdevs it is built on. The
   * registry finds them (they must exist), claims them for writing (a second
   * writer, an export or another layer, is then refused naming this one) and
   * passes their descriptions to create(), which keeps them in desc.bases.
   */
  readonly baseKeys?: readonly string[];
  /**
   * A layer on a list of bases (raid1's members=f0+f1): their names, from a
   * spec; when given, it stands in for baseKeys.
   */
  baseNames?(spec: Record<string, string>): string[];
  /**
   * A spec that stands for several bdevs (split's count=): the specs of each,
   * normalized, given the bases' descriptions. The registry creates them one
   * by one; `names` lists them without the bases (for config checks).
   */
  expand?(spec: Record<string, string>, bases: BdevDesc[]): Record<string, string>[];
  names?(spec: Record<string, string>): string[];
  /**
   * Main thread, no side effects: validate a spec and return it in canonical
   * form (every key the module knows, defaults filled in, sizes in bytes), so
   * two specs for the same bdev compare equal key by key. Throws a clear Error
   * on bad input.
   */
  normalize(spec: Record<string, string>): Record<string, string>;
  /**
   * Main thread: create the shared state (malloc's memory, file checks, a
   * remote store's connection) from a normalized spec. Remote bdevs connect
   * here, so it may be asynchronous; it must never block the event loop.
   */
  create(spec: Record<string, string>, bases: BdevDesc[]): BdevDesc | Promise<BdevDesc>;
  /** Reactor thread: open this reactor's channel. */
  open(desc: BdevDesc, ctx: ChannelContext): Channel;
  /**
   * Main thread, optional: change the capacity (to `size`, or re-read it) and
   * update desc.info; returns the new size in bytes.
   */
  resize?(desc: BdevDesc, size: string | undefined): number | Promise<number>;
  /**
   * Main thread, optional: call `changed` whenever the store reports that the
   * bdev's size changed elsewhere (an `rbd resize` by another client); the
   * daemon then resizes with no size (re-reads it) and tells the frontends.
   * `unwatched` says why the store cannot be watched (resizes made elsewhere
   * then go unnoticed; I/O is unaffected). Returns the function that stops
   * watching (called before destroy).
   */
  watch?(desc: BdevDesc, changed: () => void, unwatched: (why: string) => void): () => void;
  /** What listings show of this bdev (SPDK's bdev_get_bdevs product_name and driver_specific). */
  describe(desc: BdevDesc): { productName: string; driverSpecific: Record<string, unknown> };
  /** Main thread: release what create() made, after every channel on it closed. */
  destroy(desc: BdevDesc): void | Promise<void>;
}
