// The rbd part of the addon (native/rbd.cc): librbd/librados loaded at run
// time. Setup calls return Promises (they run on libuv's pool, since librados
// blocks) and reject with an Error carrying errno and the failing call; the hot
// path (rbdSubmit/rbdReap) returns -errno and never throws.
import { loadNative } from './index.js';

export interface RbdClusterOptions {
  /** what makes two bdevs share one rados connection */
  clusterKey: string;
  /** cluster name (rados_create2), usually "ceph" */
  cluster: string;
  /** Ceph id without "client." */
  user: string;
  /** ceph.conf path; '' = librados' default search, a missing file then being fine */
  conf: string;
  /** rados_conf_set pairs, applied in order after the conf file, before connect */
  options: [string, string][];
}

export interface RbdImageRef {
  pool: string;
  namespace: string;
  image: string;
  snapshot: string;
  /** what makes two bdevs the same image (a second open is refused: one handle per image) */
  imageKey: string;
}

export interface RbdOpened {
  /** process-wide image handle, valid on every thread */
  image: number;
  size: number;
  objSize: number;
  order: number;
  /** librbd version, e.g. "1.16.0" */
  version: string;
  /** librbd has rbd_aio_write_zeroes */
  writeZeroes: boolean;
}

export interface RbdChannelHandle {
  channel: number;
  /** epoll fd over the image's and this channel's eventfds */
  notifyFd: number;
  /** native memory for the iovec arrays: slot * maxIov * 16 bytes */
  arenaAddr: number;
  arenaBytes: number;
}

export const RBD_OP = { READ: 0, WRITE: 1, FLUSH: 2, DISCARD: 3, WRITE_ZEROES: 4 } as const;
/** zero_flags of rbd_aio_write_zeroes: write real zeroes, do not deallocate */
export const RBD_WRITE_ZEROES_FLAG_THICK_PROVISION = 1;

export interface RbdShim {
  /** Loads the libraries if needed; throws (message names the package) when they are missing. */
  rbdVersion(): string;
  rbdOpen(cluster: RbdClusterOptions, image: RbdImageRef): Promise<RbdOpened>;
  /** Unwatch, wait up to drainMs for I/O closed channels left in flight, close; the last image of a cluster shuts it down. */
  rbdClose(image: number, drainMs: number): Promise<void>;
  rbdSize(image: number): Promise<number>;
  rbdResize(image: number, size: number, allowShrink: boolean): Promise<number>;
  /** An eventfd librbd's thread writes on every header update (closed by rbdClose). */
  rbdWatch(image: number): Promise<number>;
  rbdUnwatch(image: number): Promise<void>;
  /** Reactor thread, throws. */
  rbdChannelOpen(image: number, slots: number, maxIov: number): RbdChannelHandle;
  /** Owner thread; returns how many I/Os were left in flight (their results are dropped). */
  rbdChannelClose(channel: number): number;
  /** 0 or -errno; flags = zero_flags for WRITE_ZEROES */
  rbdSubmit(channel: number, op: number, slot: number, offset: number, len: number, iovAddr: number, niov: number, flags: number): number;
  /** (slot, ret) pairs written to out; count or -errno. No system call: safe to call on every pass. */
  rbdReap(channel: number, out: Int32Array): number;
  /** Zero the eventfds behind notifyFd after it woke the reactor; 0 or -errno. */
  rbdClearNotify(channel: number): number;
}

interface ShimError {
  errno?: unknown;
  syscall?: unknown;
  message?: unknown;
}

/** An rbd failure: the message says what failed; errno and call for callers that switch on them. */
export class RbdError extends Error {
  constructor(
    message: string,
    readonly errno: number,
    readonly call: string,
  ) {
    super(message);
  }
}

function toRbdError(e: unknown): unknown {
  const se = e as ShimError;
  if (typeof se?.errno === 'number' && typeof se.syscall === 'string') return new RbdError(String(se.message), se.errno, se.syscall);
  return e;
}

const ASYNC = ['rbdOpen', 'rbdClose', 'rbdSize', 'rbdResize', 'rbdWatch', 'rbdUnwatch'] as const;
const ALL = [...ASYNC, 'rbdVersion', 'rbdChannelOpen', 'rbdChannelClose', 'rbdSubmit', 'rbdReap', 'rbdClearNotify'] as const satisfies readonly (keyof RbdShim)[];

let loaded: RbdShim | undefined;

/** The rbd calls of this thread's addon instance. Does not load librbd (the first setup call does). */
export function loadRbd(): RbdShim {
  if (loaded) return loaded;
  const raw = loadNative() as unknown as Record<string, unknown>;
  const missing = ALL.filter((k) => typeof raw[k] !== 'function');
  if (missing.length > 0) throw new Error(`vdx native shim is out of date (no ${missing.join(', ')}); run 'npm run install'`);
  const fns = raw as unknown as RbdShim;
  const wrapped: Record<string, unknown> = {};
  for (const k of ASYNC) {
    const f = fns[k] as (...a: unknown[]) => Promise<unknown>;
    wrapped[k] = (...a: unknown[]) => f(...a).catch((e: unknown) => Promise.reject(toRbdError(e)));
  }
  for (const k of ['rbdVersion', 'rbdChannelOpen'] as const) {
    const f = fns[k] as (...a: unknown[]) => unknown;
    wrapped[k] = (...a: unknown[]) => {
      try {
        return f(...a);
      } catch (e) {
        throw toRbdError(e);
      }
    };
  }
  loaded = Object.freeze({
    ...wrapped,
    rbdChannelClose: fns.rbdChannelClose,
    rbdSubmit: fns.rbdSubmit,
    rbdReap: fns.rbdReap,
    rbdClearNotify: fns.rbdClearNotify,
  }) as RbdShim;
  return loaded;
}
