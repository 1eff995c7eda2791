// The stream-socket part of the addon (native/net.cc), for network bdevs. All
// calls are non-blocking and return -errno, except timerfdCreate (setup, throws).
import { loadNative, VdxError, type NativeShim } from './index.js';

export interface NetShim extends NativeShim {
  /** Start a non-blocking TCP connect to an IP literal: fd or -errno. Done when writable; then soError(). */
  tcpConnect(numericHost: string, port: number): number;
  /** Non-blocking unix stream connect: fd (connected or in progress) or -errno. */
  unixConnectNb(path: string): number;
  /** The socket's pending error as 0 or -errno (a connect's outcome). */
  soError(fd: number): number;
  tcpNodelay(fd: number): number;
  /** recv into host memory: bytes, 0 at EOF, or -errno (-EAGAIN: nothing yet). */
  recvAt(fd: number, addr: number, len: number): number;
  /** sendmsg of an iovec array stored at iovAddr (MSG_NOSIGNAL): bytes or -errno. */
  sendIov(fd: number, iovAddr: number, iovcnt: number): number;
  /** send from a typed array (MSG_NOSIGNAL): bytes or -errno. */
  sendBuf(fd: number, buf: Uint8Array, offset: number, length: number): number;
  /** A non-blocking CLOCK_MONOTONIC timerfd; throws VdxError. */
  timerfdCreate(): number;
  /** Fire once after delayMs (> 0), or disarm (0): 0 or -errno. */
  timerfdSet(fd: number, delayMs: number): number;
  /** Expirations since the last read, or -errno (-EAGAIN: not fired). */
  timerfdRead(fd: number): number;
  readonly EPOLLOUT: number;
  readonly EPOLLERR: number;
  readonly EPOLLHUP: number;
  readonly EPOLLRDHUP: number;
  readonly IOV_MAX: number;
}

const REQUIRED = [
  'tcpConnect', 'unixConnectNb', 'soError', 'tcpNodelay', 'recvAt', 'sendIov', 'sendBuf', 'timerfdCreate', 'timerfdSet',
  'timerfdRead',
] as const satisfies readonly (keyof NetShim)[];

let loaded: NetShim | undefined;

/** The addon with its socket calls, per thread; fails naming what an old build lacks. */
export function loadNet(): NetShim {
  if (loaded) return loaded;
  const n = loadNative() as NetShim;
  const missing = REQUIRED.filter((k) => typeof n[k] !== 'function');
  if (missing.length > 0) throw new Error(`vdx native shim is out of date (no ${missing.join(', ')}); run 'npm run install'`);
  const create = n.timerfdCreate;
  loaded = Object.freeze({
    ...n,
    timerfdCreate: (): number => {
      try {
        return create();
      } catch (e) {
        const se = e as { errno?: number; syscall?: string };
        if (typeof se.errno === 'number' && typeof se.syscall === 'string') throw new VdxError(se.errno, se.syscall);
        throw e;
      }
    },
  }) as NetShim;
  return loaded;
}
