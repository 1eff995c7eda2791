// What the command line hands the daemon, kept apart from daemon.ts so `vdx
// serve` can name its defaults and start its reactors before it loads the
// daemon's module graph (the reactors load theirs meanwhile).
import type { ReactorPool } from './core/reactor-pool.js';
import type { MetricsAddr } from './metrics/server.js';

export const DEFAULT_RPC_SOCKET = '/run/vdx/vdx.rpc.sock';
export const DEFAULT_VHOST_SOCKET_DIR = '/run/vdx';
/** VDUSE devices' records and in-flight logs, and the running state */
export const DEFAULT_STATE_DIR = '/run/vdx';

/** A saved configuration that cannot be replayed: restarting will not help. */
export class ConfigError extends Error {}

export interface DaemonOptions {
  /** null: no control socket */
  rpcSocket: string | null;
  /** where vhost_create_blk_controller puts sockets (SPDK's -S) */
  vhostSocketDir: string;
  /** serve Prometheus metrics at http://ADDR/metrics; undefined: off */
  metrics?: MetricsAddr;
  /** VDUSE devices' records and in-flight logs (default /run/vdx) */
  stateDir?: string;
  /** reactors already started with the config's settings (else the daemon starts them) */
  pool?: ReactorPool;
}
