// A bdev as the method call that recreates it (save_config), in SPDK's names
// where SPDK has the bdev type, with vdx's extra parameters where it has more.
import type { BdevEntry } from '../../control/bdevs.js';
import type { ConfigEntry } from './framework.js';

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
    default: {
      const { type, name, ...keys } = s;
      return { method: 'bdev_create', params: { type, name, keys: { ...keys, uuid: e.uuid } } };
    }
  }
}
