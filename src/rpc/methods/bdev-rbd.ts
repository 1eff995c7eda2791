// rbd bdev methods, with SPDK's names, parameters and results
// (module/bdev/rbd/bdev_rbd_rpc.c). SPDK passes Ceph options as a `config`
// map; vdx takes those it sets itself (monitors, key file, timeouts, cache) and
// refuses the rest, naming them: anything else belongs in a ceph.conf
// (config_file). vdx extras: namespace, snapshot, cache, read_only, the timeouts.
import type { BdevSpec } from '../../control/bdevs.js';
import type { RbdCluster } from '../../control/rbd-clusters.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, logicalBlockSize, nonEmpty, oneOf, specKeys, str } from '../schema.js';
import { createBdev, deleteMethod, freeName, resizeMethod } from './bdev.js';
import type { RpcContext } from './context.js';

/**
 * Ceph option names (SPDK's config / config_param keys) and the rbd bdev key
 * each sets; where two name one key, the first is what save_config writes.
 */
export const CEPH_OPTIONS: Record<string, string> = {
  mon_host: 'mon-host',
  key_file: 'key-file',
  keyring: 'key-file',
  rados_osd_op_timeout: 'osd-op-timeout',
  rados_mon_op_timeout: 'mon-op-timeout',
  client_mount_timeout: 'connect-timeout',
};

/** Map SPDK's Ceph option map onto rbd bdev keys; an option vdx does not set is refused by name. */
function cephOptions(param: string, map: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(map ?? {})) {
    const key = k.replace(/[ -]/g, '_');
    if (Object.hasOwn(CEPH_OPTIONS, key)) {
      out[CEPH_OPTIONS[key]!] = v;
    } else if (key === 'rbd_cache') {
      if (!/^(true|false|1|0)$/.test(v)) throw invalidParams(`${param}.rbd_cache=${v}: must be true or false`);
      out.cache ??= v === 'true' || v === '1' ? 'writearound' : 'none';
    } else if (key === 'rbd_cache_policy') {
      out.cache = v;
    } else {
      throw invalidParams(
        `${param}: Ceph option '${k}' is not one vdx sets; it takes ${[...Object.keys(CEPH_OPTIONS), 'rbd_cache', 'rbd_cache_policy'].join(', ')}; put other options in a ceph.conf and name it with config_file`,
      );
    }
  }
  return out;
}

/** The connection keys of an rbd bdev that a registered cluster supplies. */
function clusterKeys(c: RbdCluster): Record<string, string> {
  const keys = cephOptions('config_param', c.configParam);
  if (c.userId !== undefined) keys.user = c.userId;
  if (c.configFile !== undefined) keys.conf = c.configFile;
  if (c.keyFile !== undefined) keys['key-file'] = c.keyFile;
  return keys;
}

/** rbd bdevs whose connection is the cluster's (they were made with its settings). */
function clusterUsers(ctx: RpcContext, c: RbdCluster): string[] {
  const want = clusterKeys(c);
  return ctx.bdevs
    .list()
    .filter((e) => e.spec.type === 'rbd' && Object.entries(want).every(([k, v]) => e.spec[k] === v))
    .map((e) => e.spec.name!);
}

function clusterInfo(c: RbdCluster): Record<string, unknown> {
  return {
    cluster_name: c.name,
    ...(c.userId !== undefined ? { user_id: c.userId } : {}),
    ...(c.configParam !== undefined ? { config_param: c.configParam } : {}),
    ...(c.configFile !== undefined ? { config_file: c.configFile } : {}),
    ...(c.keyFile !== undefined ? { key_file: c.keyFile } : {}),
  };
}

const cephId = str.where('a Ceph id without "client." (e.g. admin)', (s) => s.length > 0 && !s.startsWith('client.'));

export const rbdMethods: Record<string, Method<RpcContext>> = {
  bdev_rbd_register_cluster: method(
    'name a Ceph cluster\'s connection settings for bdev_rbd_create\'s cluster_name',
    {
      name: nonEmpty.describe('cluster name'),
      user_id: cephId.optional(),
      config_param: specKeys.optional().describe('Ceph options (mon_host, key_file, timeouts)'),
      config_file: nonEmpty.optional().describe('ceph.conf path'),
      key_file: nonEmpty.optional().describe('keyring path'),
      core_mask: str.optional(),
    },
    (p, ctx) => {
      if (p.core_mask) throw invalidParams(`core_mask=${p.core_mask}: vdx does not pin librados' threads; leave core_mask out`);
      const c: RbdCluster = { name: p.name, userId: p.user_id, configFile: p.config_file, keyFile: p.key_file, configParam: p.config_param };
      clusterKeys(c); // refuses options vdx does not set, now rather than at bdev_rbd_create
      return ctx.rbdClusters.register(c).name;
    },
  ),
  bdev_rbd_unregister_cluster: method('forget a registered Ceph cluster that no rbd bdev uses', { name: nonEmpty.describe('cluster name') }, (p, ctx) => {
    ctx.rbdClusters.unregister(p.name, clusterUsers(ctx, ctx.rbdClusters.get(p.name)));
    return true;
  }),
  bdev_rbd_get_clusters_info: method('registered Ceph clusters (one, with name)', { name: nonEmpty.optional().describe('cluster name') }, (p, ctx) => {
    if (p.name !== undefined) return clusterInfo(ctx.rbdClusters.get(p.name));
    return ctx.rbdClusters.list().map(clusterInfo);
  }),
  bdev_rbd_create: method(
    'create an rbd bdev on a Ceph RBD image (librbd, loaded at run time)',
    {
      pool_name: nonEmpty.describe('Ceph pool'),
      rbd_name: nonEmpty.describe('RBD image'),
      block_size: logicalBlockSize.describe('logical block size in bytes'),
      name: nonEmpty.optional().describe('bdev name (default CephN)'),
      user_id: cephId.optional(),
      config: specKeys.optional().describe('Ceph options (mon_host, key_file, timeouts)'),
      cluster_name: nonEmpty.optional().describe('a cluster from bdev_rbd_register_cluster'),
      uuid: str.optional(),
      read_only: bool.optional(),
      config_file: nonEmpty.optional().describe('vdx: ceph.conf path'),
      namespace: nonEmpty.optional().describe('vdx: RADOS namespace'),
      snapshot: nonEmpty.optional().describe('vdx: image snapshot (read-only)'),
      cache: oneOf('none', 'writearound', 'writeback').optional().describe('vdx: librbd cache mode'),
      cluster: nonEmpty.optional().describe('vdx: Ceph cluster name, as in /etc/ceph/CLUSTER.conf (default ceph)'),
    },
    async (p, ctx) => {
      const spec: BdevSpec = { type: 'rbd', name: p.name ?? freeName(ctx, 'Ceph'), pool: p.pool_name, image: p.rbd_name, 'block-size': String(p.block_size) };
      if (p.cluster_name !== undefined) {
        if (p.user_id !== undefined || p.config !== undefined || p.config_file !== undefined) {
          throw invalidParams('cluster_name: the cluster has the connection settings; leave out user_id, config and config_file');
        }
        Object.assign(spec, clusterKeys(ctx.rbdClusters.get(p.cluster_name)));
      } else {
        Object.assign(spec, cephOptions('config', p.config));
        if (p.user_id !== undefined) spec.user = p.user_id;
        if (p.config_file !== undefined) spec.conf = p.config_file;
      }
      if (p.cache !== undefined) spec.cache = p.cache;
      if (p.cluster !== undefined) spec.cluster = p.cluster;
      if (p.namespace !== undefined) spec.namespace = p.namespace;
      if (p.snapshot !== undefined) spec.snapshot = p.snapshot;
      if (p.read_only !== undefined) spec.readonly = p.read_only ? 'on' : 'off';
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_rbd_create')).desc.info.name;
    },
  ),
  bdev_rbd_delete: deleteMethod('rbd', 'rbd'),
  bdev_rbd_resize: resizeMethod('rbd', 'grow an rbd bdev\'s image and tell its exports; new_size in MiB, as SPDK'),
};

/** save_config: registered clusters first, so bdevs replayed after them could name them. */
export function rbdClusterConfig(ctx: RpcContext): { method: string; params: Record<string, unknown> }[] {
  return ctx.rbdClusters.list().map((c) => {
    const { cluster_name, ...rest } = clusterInfo(c);
    return { method: 'bdev_rbd_register_cluster', params: { name: cluster_name, ...rest } };
  });
}

