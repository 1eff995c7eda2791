// The only module that loads the addon. Everything else reaches the kernel
// through the typed interface below, so tests can inject a fake.
import { createRequire } from 'node:module';
import { VdxError } from './vdx-error.js';

export { VdxError } from './vdx-error.js';
export { errnoName, E } from './errno.js';

/** A mapping made by the shim: the buffer spans it, addr is its host virtual address. */
export interface Mapping {
  buffer: ArrayBuffer;
  addr: number;
}

/**
 * The little-endian u16 at host address `addr` in whichever of `maps` holds it,
 * or undefined. Control-plane use only (it scans): e.g. a ring's used index.
 */
export function readMappedU16(maps: Iterable<Mapping>, addr: number): number | undefined {
  for (const m of maps) {
    const off = addr - m.addr;
    if (off >= 0 && off + 2 <= m.buffer.byteLength) return new DataView(m.buffer).getUint16(off, true);
  }
  return undefined;
}

export interface UringSetup {
  fd: number;
  features: number;
  sqEntries: number;
  cqEntries: number;
  sqOff: { head: number; tail: number; ringMask: number; ringEntries: number; flags: number; dropped: number; array: number };
  cqOff: { head: number; tail: number; ringMask: number; ringEntries: number; overflow: number; cqes: number; flags: number };
  sq: Mapping & { length: number };
  cq: Mapping & { length: number };
  sqes: Mapping & { length: number };
  singleMmap: boolean;
}

export interface FdWatcher {
  start(readable: boolean, writable: boolean, cb: (status: number, readable: boolean, writable: boolean) => void): void;
  /** No callbacks until start() again. */
  stop(): void;
  /** Stop for good and release the handle; the fd stays open. */
  close(): void;
}

/**
 * The raw addon. Slow-path calls (setup) throw VdxError; hot-path calls return
 * -errno. Addresses are numbers (x86_64 user addresses are below 2^47).
 */
export interface NativeShim {
  close(fd: number): number;
  // eventfd
  eventfd(initval: number, flags: number): number;
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, add: number): number;
  readonly EFD_NONBLOCK: number;
  readonly EFD_CLOEXEC: number;
  readonly EFD_SEMAPHORE: number;
  // mappings
  mmap(fd: number, offset: number, length: number, prot: number, flags: number): Mapping;
  munmap(buffer: ArrayBuffer | null, addr: number, length: number): number;
  viewAddress(addr: number, length: number): ArrayBuffer;
  detach(buffer: ArrayBuffer): void;
  memfdCreate(name: string, flags: number): number;
  ftruncate(fd: number, length: number): void;
  memcpy(dstAddr: number, srcAddr: number, length: number): void;
  memset(dstAddr: number, byte: number, length: number): void;
  // AES-XTS (native/crypto.cc), through the OpenSSL inside Node
  /** key of 32 or 64 bytes -> a context id for this thread; throws EINVAL */
  xtsCreate(key: Uint8Array): number;
  /** 0 or -EINVAL; one XTS data unit per sectorSize bytes, tweak = firstIv + k * ivStep */
  xtsCrypt(id: number, encrypt: number, srcAddr: number, dstAddr: number, length: number, sectorSize: number, firstIv: number, ivStep: number): number;
  xtsFree(id: number): void;
  /** 0 or -errno */
  madvise(addr: number, length: number, advice: number): number;
  readonly MADV_DONTNEED: number;
  readonly MADV_HUGEPAGE: number;
  readonly MADV_POPULATE_WRITE: number;
  readonly MAP_NORESERVE: number;
  readonly PROT_READ: number;
  readonly PROT_WRITE: number;
  readonly MAP_SHARED: number;
  readonly MAP_PRIVATE: number;
  readonly MAP_ANONYMOUS: number;
  readonly MAP_POPULATE: number;
  readonly MFD_CLOEXEC: number;
  // unix sockets
  unixListen(path: string, backlog: number): number;
  unixConnect(path: string): number;
  socketPair(): [number, number];
  accept(fd: number): number;
  setNonblocking(fd: number, on: boolean): number;
  recvMsg(fd: number, buf: Uint8Array, offset: number, length: number, fdsOut: Int32Array): number;
  sendMsg(fd: number, buf: Uint8Array, offset: number, length: number, fds: number[]): number;
  FdWatcher: new (fd: number) => FdWatcher;
  // epoll
  epollCreate(): number;
  epollCtl(epfd: number, op: number, fd: number, events: number, token: number): number;
  epollWait(epfd: number, out: Uint32Array, timeoutMs: number): number;
  readonly EPOLL_CTL_ADD: number;
  readonly EPOLL_CTL_DEL: number;
  readonly EPOLL_CTL_MOD: number;
  readonly EPOLLIN: number;
  // io_uring
  uringSetup(entries: number, flags: number): UringSetup;
  uringEnter(fd: number, toSubmit: number, minComplete: number, flags: number): number;
  uringRegisterEventfd(fd: number, eventfd: number): number;
  uringRegisterFiles(fd: number, fds: Int32Array): number;
  // ioctl, raw read/write
  ioctl(fd: number, request: number, arg: Uint8Array | null): number;
  read(fd: number, buf: Uint8Array): number;
  write(fd: number, buf: Uint8Array): number;
  // netlink
  netlinkOpen(protocol: number): number;
  readonly NETLINK_GENERIC: number;
  // scheduling
  pinThread(cpus: number[]): number;
  allowedCpus(): number[];
  // sd_notify transport and clock (src/systemd)
  /**
   * One AF_UNIX datagram to `path` ('@name' = abstract socket) from a fresh
   * socket, sent without blocking: bytes sent or -errno (-ENOENT, -ECONNREFUSED,
   * -EAGAIN when the receiver's queue is full, -EINVAL for an empty or too long name).
   */
  unixDgramSend(path: string, data: Uint8Array): number;
  /** CLOCK_MONOTONIC in microseconds (what systemd's MONOTONIC_USEC= means), or -errno. */
  clockMonotonicUs(): number;
}

/**
 * Every function the addon must export. A build/ left over from an older
 * native/ lacks the newer ones; loading it fails here, naming them, rather than
 * later with "x is not a function".
 */
const REQUIRED = [
  'close', 'eventfd', 'eventfdRead', 'eventfdWrite', 'mmap', 'munmap', 'viewAddress', 'detach', 'memfdCreate',
  'ftruncate', 'memcpy', 'memset', 'madvise', 'unixListen', 'unixConnect', 'socketPair', 'accept', 'setNonblocking',
  'recvMsg', 'sendMsg', 'FdWatcher', 'epollCreate', 'epollCtl', 'epollWait', 'uringSetup', 'uringEnter',
  'uringRegisterEventfd', 'uringRegisterFiles', 'ioctl', 'read', 'write', 'netlinkOpen', 'pinThread', 'allowedCpus',
  'unixDgramSend', 'clockMonotonicUs', 'xtsCreate', 'xtsCrypt', 'xtsFree',
] as const satisfies readonly (keyof NativeShim)[];

interface ShimError {
  errno?: unknown;
  syscall?: unknown;
  message?: unknown;
}

/** Turn the addon's plain Error into a VdxError so callers can switch on `code`. */
function wrapThrowing<F extends (...args: never[]) => unknown>(fn: F): F {
  return ((...args: Parameters<F>) => {
    try {
      return fn(...args);
    } catch (e) {
      const se = e as ShimError;
      if (typeof se?.errno === 'number' && typeof se.syscall === 'string') throw new VdxError(se.errno, se.syscall);
      throw e;
    }
  }) as F;
}

let loaded: NativeShim | undefined;

/** Load the addon once per thread (workers load their own instance). */
export function loadNative(): NativeShim {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  let raw: NativeShim;
  try {
    raw = require('../../build/Release/vdx_native.node') as NativeShim;
  } catch (e) {
    throw new Error(`vdx native shim not built (${(e as Error).message}); run 'npm ci' or 'npm run install'`);
  }
  const missing = REQUIRED.filter((k) => typeof raw[k] !== 'function');
  if (missing.length > 0) throw new Error(`vdx native shim is out of date (no ${missing.join(', ')}); run 'npm run install'`);
  const slow = [
    'eventfd', 'mmap', 'viewAddress', 'memfdCreate', 'ftruncate', 'unixListen', 'unixConnect', 'socketPair',
    'epollCreate', 'uringSetup', 'netlinkOpen', 'allowedCpus',
  ] as const;
  const wrapped: Record<string, unknown> = {};
  for (const k of slow) wrapped[k] = wrapThrowing(raw[k] as (...a: never[]) => unknown);
  loaded = Object.freeze({ ...raw, ...wrapped }) as NativeShim;
  return loaded;
}
