// sd_notify(3) without libsystemd. The protocol is one AF_UNIX datagram per
// call, newline-separated KEY=VALUE assignments, sent to the socket named by
// $NOTIFY_SOCKET: a path, or '@name' for an abstract socket. The datagram
// itself goes out through the shim (Node has no unix datagram sockets).
//
// Control plane, main thread. Nothing here throws or blocks: a failed send
// returns -errno and is logged once, since a daemon that cannot reach systemd
// still serves its devices (systemd then times the start out on its own).
import { errnoName, loadNative, type NativeShim } from '../native/index.js';

/** The shim calls the notifier makes; tests pass a fake. */
export type NotifyNative = Pick<NativeShim, 'unixDgramSend' | 'clockMonotonicUs'>;

/** Only warn is used; a pino Logger fits. */
export interface NotifyLogger {
  warn(obj: object, msg: string): void;
}

export interface SystemdNotifierOptions {
  log: NotifyLogger;
  /**
   * Where NOTIFY_SOCKET is read (default process.env). It is read once and
   * never removed: unlike sd_notify(3)'s unset_environment, so threads and
   * later calls see the same value.
   */
  env?: Readonly<Record<string, string | undefined>>;
  /** Default loadNative(), loaded only when NOTIFY_SOCKET names a socket. */
  native?: NotifyNative;
}

// STATUS= is one line of free text; a newline would start a new assignment
// (e.g. "MAINPID=1") and a NUL makes systemd drop the whole datagram.
function oneLine(text: string): string {
  return text.replace(/[\r\n\0]/g, ' ');
}

/**
 * Tells systemd about the daemon's state (Type=notify units). With
 * NOTIFY_SOCKET unset or empty (not started by systemd) every call is a no-op
 * returning 0. A value that is neither a path ('/…') nor an abstract name
 * ('@…'), e.g. systemd 253's 'vsock:CID:PORT', is warned about once and
 * disables the notifier.
 *
 * Each call returns 0 (sent, or nothing to do) or -errno (-ENOENT, -ECONNREFUSED,
 * -EAGAIN when systemd's queue is full: the send never blocks). Only the first
 * failure is logged.
 */
export class SystemdNotifier {
  /** The socket datagrams go to; undefined when the notifier is a no-op. */
  readonly socket: string | undefined;
  private readonly native: NotifyNative | undefined;
  private readonly log: NotifyLogger;
  private warned = false;

  constructor(opts: SystemdNotifierOptions) {
    this.log = opts.log;
    const raw = (opts.env ?? process.env).NOTIFY_SOCKET;
    let socket: string | undefined;
    let native: NotifyNative | undefined;
    if (raw !== undefined && raw !== '') {
      if (raw[0] !== '/' && raw[0] !== '@') {
        this.warnOnce({ socket: raw }, 'NOTIFY_SOCKET is neither a path nor an @abstract socket; not notifying systemd');
      } else {
        try {
          native = opts.native ?? loadNative();
          socket = raw;
        } catch (e) {
          this.warnOnce({ socket: raw, err: (e as Error).message }, 'cannot load the native shim; not notifying systemd');
        }
      }
    }
    this.socket = socket;
    this.native = native;
  }

  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** Startup finished: READY=1, with STATUS= when given. */
  ready(status?: string): number {
    return this.send(status === undefined ? 'READY=1' : `READY=1\nSTATUS=${oneLine(status)}`);
  }

  /** Free-form status line shown by `systemctl status`. */
  status(text: string): number {
    return this.send(`STATUS=${oneLine(text)}`);
  }

  /** Shutdown began: STOPPING=1, with STATUS= when given. */
  stopping(status?: string): number {
    return this.send(status === undefined ? 'STOPPING=1' : `STOPPING=1\nSTATUS=${oneLine(status)}`);
  }

  /**
   * A reload began: RELOADING=1 plus MONOTONIC_USEC= (CLOCK_MONOTONIC µs),
   * which systemd 253+ requires to accept it for Type=notify-reload
   * (sd_notify(3)). Send ready() again when the reload is done. Nothing calls
   * this yet: the daemon has no reload.
   */
  reloading(): number {
    if (!this.native) return 0;
    const us = this.native.clockMonotonicUs();
    return this.send(us < 0 ? 'RELOADING=1' : `RELOADING=1\nMONOTONIC_USEC=${us}`);
  }

  private send(state: string): number {
    if (!this.native || this.socket === undefined) return 0;
    const n = this.native.unixDgramSend(this.socket, Buffer.from(state, 'utf8'));
    if (n >= 0) return 0;
    const first = state.split('\n', 1)[0] ?? state; // e.g. READY=1: which notification was lost
    this.warnOnce({ socket: this.socket, errno: errnoName(-n), state: first }, 'cannot notify systemd; further failures are not logged');
    return n;
  }

  private warnOnce(obj: object, msg: string): void {
    if (this.warned) return;
    this.warned = true;
    this.log.warn({ component: 'systemd', ...obj }, msg);
  }
}
