// A bdev as the method call that recreates it (save_config), in SPDK's names
// where SPDK has the bdev type, with vdx's extra parameters where it has more.
import { qosLimits } from '../../bdev/qos.js';
import type { BdevEntry } from '../../control/bdevs.js';
import { NBD_PARAMS } from './bdev-nbd.js';
import { CEPH_OPTIONS } from './bdev-rbd.js';
import type { ConfigEntry } from './framework.js';

/** rbd bdev key -> the Ceph option bdev_rbd_create's config map names it by (the first of its names). */
const RBD_CEPH_OPTIONS: Record<string, string> = {};
for (const [option, key] of Object.entries(CEPH_OPTIONS)) RBD_CEPH_OPTIONS[key] ??= option;

/** Every bdev as the calls that recreate it, in creation order: one call for the bdevs one spec made (split's parts). */
export function bdevConfigEntries(list: BdevEntry[]): ConfigEntry[] {
  const seen = new Set<string>();
  const out: ConfigEntry[] = [];
  for (const e of list) {
    if (e.group) {
      if (seen.has(e.group.label)) continue;
      seen.add(e.group.label);
    }
    out.push(bdevConfigEntry(e));
  }
  // Limits after every bdev exists (SPDK's save_config writes them as calls of their own too).
  for (const e of list) {
    const limits = e.desc.qos ? qosLimits(e.desc.qos) : undefined;
    if (limits && Object.values(limits).some((v) => v > 0)) out.push({ method: 'bdev_set_qos_limit', params: { name: e.desc.info.name, ...limits } });
  }
  return out;
}

export function bdevConfigEntry(e: BdevEntry): ConfigEntry {
  const s = e.spec;
  const blockSize = Number(s['block-size']);
  switch (s.type) {
    case 'malloc':
      return {
        method: 'bdev_malloc_create',
        params: { name: s.name, num_blocks: Number(s.size) / blockSize, block_size: blockSize, uuid: e.uuid, populate: s.populate === 'on' },
      };
    case 'null':
      return { method: 'bdev_null_create', params: { name: s.name, num_blocks: Number(s.size) / blockSize, block_size: blockSize, uuid: e.uuid } };
    case 'file': {
      const common = { name: s.name, filename: s.path, block_size: blockSize, uuid: e.uuid };
      if (e.method === 'bdev_uring_create' && s.direct === 'on' && s.readonly === 'off') return { method: 'bdev_uring_create', params: common };
      return { method: 'bdev_aio_create', params: { ...common, readonly: s.readonly === 'on', direct: s.direct === 'on' } };
    }
    case 'rbd': {
      const config: Record<string, string> = {};
      for (const [key, option] of Object.entries(RBD_CEPH_OPTIONS)) if (s[key] !== undefined && s[key] !== '') config[option] = s[key];
      const opt = (k: string, param: string) => (s[k] !== undefined && s[k] !== '' ? { [param]: s[k] } : {});
      return {
        method: 'bdev_rbd_create',
        params: {
          name: s.name, pool_name: s.pool, rbd_name: s.image, block_size: blockSize, uuid: e.uuid,
          ...opt('user', 'user_id'), ...(Object.keys(config).length ? { config } : {}), ...opt('conf', 'config_file'),
          ...opt('namespace', 'namespace'), ...opt('snapshot', 'snapshot'), ...opt('cache', 'cache'), ...opt('cluster', 'cluster'),
          read_only: s.readonly === 'on',
        },
      };
    }
    case 'nbd': {
      const params: Record<string, unknown> = { name: s.name, uuid: e.uuid };
      for (const [param, key] of Object.entries(NBD_PARAMS)) {
        const v = s[key];
        if (v === undefined || v === '') continue;
        params[param] = key === 'readonly' ? v === 'on' : /^(port|connections|reconnect-timeout|connect-timeout|io-timeout|block-size)$/.test(key) ? Number(v) : v;
      }
      return { method: 'bdev_nbd_create', params };
    }
    case 'split': {
      const size = Number(s.size);
      // Whole MiB go back as SPDK's split_size_mb; other sizes in vdx's own keys.
      if (size % (1 << 20) !== 0) return { method: 'bdev_create', params: { type: 'split', name: s.name, keys: { base: s.base, count: s.count, size: s.size } } };
      return { method: 'bdev_split_create', params: { base_bdev: s.base, split_count: Number(s.count), ...(size ? { split_size_mb: size / (1 << 20) } : {}) } };
    }
    case 'delay':
      return {
        method: 'bdev_delay_create',
        params: {
          base_bdev_name: s.base, name: s.name, uuid: e.uuid,
          avg_read_latency: Number(s['avg-read-latency']), p99_read_latency: Number(s['p99-read-latency']),
          avg_write_latency: Number(s['avg-write-latency']), p99_write_latency: Number(s['p99-write-latency']),
        },
      };
    case 'error':
      // Injections are run-time state, not configuration (SPDK saves none either).
      if (s.name === `EE_${s.base}`) return { method: 'bdev_error_create', params: { base_name: s.base, uuid: e.uuid } };
      return { method: 'bdev_create', params: { type: 'error', name: s.name, keys: { base: s.base, uuid: e.uuid } } };
    case 'raid1':
      return { method: 'bdev_raid_create', params: { name: s.name, raid_level: 'raid1', base_bdevs: s.members!.split('+'), uuid: e.uuid } };
    case 'crypt':
      return {
        method: 'bdev_crypto_create',
        params: {
          base_bdev_name: s.base, name: s.name, key_file: s['key-file'], ...(s['key-size'] ? { key_size: Number(s['key-size']) } : {}),
          cipher: 'aes-xts-plain64', sector_size: Number(s['sector-size']), iv_large_sectors: s['iv-large-sectors'] === 'on', uuid: e.uuid,
        },
      };
    case 'passthru':
      return { method: 'bdev_passthru_create', params: { base_bdev_name: s.base, name: s.name, uuid: e.uuid } };
    default: {
      const { type, name, ...keys } = s;
      return { method: 'bdev_create', params: { type, name, keys: { ...keys, uuid: e.uuid } } };
    }
  }
}
