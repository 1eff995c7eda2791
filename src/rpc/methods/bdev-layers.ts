// Layered bdev methods, with SPDK's names and parameters
// (module/bdev/split/vbdev_split_rpc.c, module/bdev/passthru/vbdev_passthru_rpc.c).
import type { BdevSpec } from '../../control/bdevs.js';
import { MAX_SPLIT_PARTS } from '../../bdev/split.js';
import { method, type Method } from '../method.js';
import { int, nonEmpty, str, u64 } from '../schema.js';
import { createBdev, createBdevs } from './bdev.js';
import type { RpcContext } from './context.js';

const MiB = 1 << 20;

export const layerMethods: Record<string, Method<RpcContext>> = {
  bdev_split_create: method(
    'cut a bdev into split_count parts named <base_bdev>p0, p1, ... (of split_size_mb MiB each, or equal); returns their names',
    {
      base_bdev: nonEmpty.describe('the bdev to cut'),
      split_count: int(1, MAX_SPLIT_PARTS).describe('number of parts'),
      split_size_mb: u64.optional().describe('size of each part in MiB (default or 0: the base divided by split_count)'),
    },
    async (p, ctx) => {
      const spec: BdevSpec = { type: 'split', base: p.base_bdev, count: String(p.split_count) };
      if (p.split_size_mb) spec.size = String(p.split_size_mb * MiB);
      return (await createBdevs(ctx, spec, 'bdev_split_create')).map((e) => e.desc.info.name);
    },
  ),
  bdev_split_delete: method('delete every part of a split (none may be in use)', { base_bdev: nonEmpty.describe('the bdev that was cut') }, async (p, ctx) => {
    await ctx.bdevs.deleteGroup(`split ${p.base_bdev}`);
    return true;
  }),

  bdev_passthru_create: method(
    'create a passthru bdev on a base (it forwards every I/O); returns its name',
    { base_bdev_name: nonEmpty.describe('the base bdev'), name: nonEmpty.describe('name of the passthru bdev'), uuid: str.optional() },
    async (p, ctx) => {
      const spec: BdevSpec = { type: 'passthru', name: p.name, base: p.base_bdev_name };
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_passthru_create')).desc.info.name;
    },
  ),
  bdev_passthru_delete: method('delete a passthru bdev', { name: nonEmpty.describe('name of the passthru bdev') }, async (p, ctx) => {
    await ctx.bdevs.delete(p.name, 'passthru');
    return true;
  }),
};
