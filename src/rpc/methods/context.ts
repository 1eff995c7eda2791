// What RPC handlers see of the daemon: its registries and a few daemon-wide
// operations. Handlers are thin over these; none reaches into a frontend.
import type { BdevRegistry } from '../../control/bdevs.js';
import type { ExportRegistry } from '../../control/exports.js';
import type { RbdClusterRegistry } from '../../control/rbd-clusters.js';
import type { ReactorPool } from '../../core/reactor-pool.js';
import type { CounterRegistry } from '../../metrics/counters.js';
import type { MethodTable } from '../method.js';

export interface ReactorSettings {
  count: number;
  /** CPUs the reactors are pinned to, one each in turn; empty: not pinned */
  cpus: number[];
  idleSpinUs: number;
}

export interface RpcContext {
  readonly bdevs: BdevRegistry;
  readonly exports: ExportRegistry;
  /** Ceph clusters named by bdev_rbd_register_cluster */
  readonly rbdClusters: RbdClusterRegistry;
  readonly pool: ReactorPool;
  /** I/O counters of every export's queues */
  readonly counters: CounterRegistry;
  readonly reactors: ReactorSettings;
  /** where vhost_create_blk_controller puts its sockets (SPDK's -S) */
  readonly vhostSocketDir: string;
  /** every method, for rpc_get_methods */
  readonly methods: MethodTable<RpcContext>;
  /** Change a bdev's capacity (to `size` bytes or "2G", or re-read it) and tell every export on it. */
  resizeBdev(name: string, size: string | undefined): Promise<number>;
}
