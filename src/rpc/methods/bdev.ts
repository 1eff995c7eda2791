// bdev subsystem methods, with SPDK's names, parameters and results
// (module/bdev/{malloc,null,aio,uring}/*_rpc.c, lib/bdev/bdev_rpc.c). vdx
// extensions (a malloc disk's `populate`, a file's `direct`) are extra optional
// parameters; SPDK's own clients never send them.
import { qosLimits, QOS_LIMITS, setQosLimits } from '../../bdev/qos.js';
import { bdevModule, BDEV_MODULES } from '../../bdev/registry.js';
import type { BdevSpec, BdevEntry } from '../../control/bdevs.js';
import { ControlError } from '../../control/errors.js';
import { bdevIostat } from '../../metrics/iostat.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, int, logicalBlockSize, nonEmpty, sizeArg, specKeys, str, u32, u64 } from '../schema.js';
import type { RpcContext } from './context.js';

const MiB = 1 << 20;
const blockSize = logicalBlockSize.describe('data block size in bytes');
const numBlocks = u64.where('a positive integer', (v) => v > 0).describe('size in blocks');

/** Create through the registry; a module's validation failure is a bad parameter (-32602). */
export async function createBdev(ctx: RpcContext, spec: BdevSpec, method?: string): Promise<BdevEntry> {
  return (await createBdevs(ctx, spec, method))[0]!;
}

/** The same for a spec that makes several bdevs (split): all of them, in order. */
export async function createBdevs(ctx: RpcContext, spec: BdevSpec, method?: string): Promise<BdevEntry[]> {
  try {
    return (await ctx.bdevs.create(spec, method)).entries;
  } catch (e) {
    if (e instanceof ControlError) throw e;
    throw invalidParams((e as Error).message);
  }
}

/** SPDK's metadata and protection-information options: vdx bdevs have no metadata, so only their zero values pass. */
function noMetadata(p: { md_size?: number; dif_type?: number; md_interleave?: boolean; dif_is_head_of_md?: boolean; dif_pi_format?: number }): void {
  if (p.md_size) throw invalidParams(`md_size=${p.md_size}: vdx bdevs carry no metadata; use 0`);
  if (p.dif_type) throw invalidParams(`dif_type=${p.dif_type}: vdx bdevs carry no protection information; use 0`);
  if (p.dif_pi_format) throw invalidParams(`dif_pi_format=${p.dif_pi_format}: vdx bdevs carry no protection information`);
}

function checkPhysical(p: { physical_block_size?: number; block_size: number }): void {
  if (p.physical_block_size !== undefined && p.physical_block_size !== p.block_size) {
    throw invalidParams(`physical_block_size=${p.physical_block_size}: vdx bdevs have one block size; use ${p.block_size} or leave it out`);
  }
}

const metadataParams = {
  physical_block_size: u32.optional(),
  md_size: u32.optional(),
  md_interleave: bool.optional(),
  dif_type: int(0, 3).optional(),
  dif_is_head_of_md: bool.optional(),
  dif_pi_format: int(0, 2).optional(),
};

/** The first unused name PREFIXn, as SPDK names bdevs made without one (Malloc0, Ceph0). */
export function freeName(ctx: RpcContext, prefix: string): string {
  for (let i = 0; ; i++) if (!ctx.bdevs.has(`${prefix}${i}`)) return `${prefix}${i}`;
}

/** SPDK's bdev_TYPE_resize: new_size in MiB, on a bdev of that type only. */
export function resizeMethod(type: string, help: string): Method<RpcContext> {
  return method(
    help,
    { name: nonEmpty.describe('bdev name'), new_size: u64.where('a positive number of MiB', (v) => v > 0).describe('new size in MiB') },
    async (p, ctx) => {
      const e = ctx.bdevs.get(p.name);
      if (e.spec.type !== type) throw new ControlError(-19, `bdev '${p.name}' is a ${e.spec.type} bdev, not ${type}`);
      await ctx.resizeBdev(p.name, String(p.new_size * MiB));
      return true;
    },
  );
}

export function deleteMethod(type: string, what: string): Method<RpcContext> {
  return method(`delete a ${what} bdev`, { name: nonEmpty.describe('bdev name') }, async (p, ctx) => {
    await ctx.bdevs.delete(p.name, type);
    return true;
  });
}

const fileCreateParams = {
  name: nonEmpty.describe('bdev name'),
  filename: nonEmpty.describe('path of a file or block device'),
  block_size: blockSize.optional(),
  uuid: str.optional(),
};

/** bdev_get_bdevs' view of one bdev (lib/bdev/bdev_rpc.c rpc_dump_bdev_info). */
export function bdevInfoJson(e: BdevEntry): Record<string, unknown> {
  const i = e.desc.info;
  const d = bdevModule(i.type).describe(e.desc);
  return {
    name: i.name,
    aliases: [],
    product_name: d.productName,
    block_size: i.blockSize,
    num_blocks: Math.floor(i.sizeBytes / i.blockSize),
    uuid: e.uuid,
    assigned_rate_limits: e.desc.qos ? qosLimits(e.desc.qos) : { rw_ios_per_sec: 0, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 },
    claimed: e.claims.size > 0,
    ...(e.claims.size ? { claim_type: claimType(e), claimed_by: [...e.claims.keys()] } : {}),
    ...(e.bases.length ? { base_bdevs: e.bases } : {}),
    zoned: false,
    supported_io_types: {
      read: true,
      write: !i.readonly,
      unmap: i.caps.discard && !i.readonly,
      flush: i.caps.flush,
      reset: false,
      nvme_admin: false,
      nvme_io: false,
      nvme_io_md: false,
      write_zeroes: i.caps.writeZeroes && !i.readonly,
      zcopy: false,
      get_zone_info: false,
      zone_management: false,
      zone_append: false,
      compare: false,
      compare_and_write: false,
      abort: false,
      seek_hole: false,
      seek_data: false,
      copy: false,
      nvme_iov_md: false,
    },
    driver_specific: { ...d.driverSpecific, ...spdkDriverSpecific(e) },
  };
}

/** SPDK's name for how the bdev is held: a layer holds it alone for writing. */
function claimType(e: BdevEntry): string {
  const kinds = [...e.claims.values()].map((c) => c.kind);
  if (kinds.includes('exclusive')) return 'exclusive_write';
  return kinds.includes('write') ? 'read_many_write_many' : 'read_many_write_none';
}

/** What SPDK's aio and uring modules show, for file bdevs made through their methods. */
function spdkDriverSpecific(e: BdevEntry): Record<string, unknown> {
  if (e.method === 'bdev_aio_create') {
    return { aio: { filename: e.spec.path, block_size_override: true, readonly: e.spec.readonly === 'on', fallocate: false } };
  }
  if (e.method === 'bdev_uring_create') return { uring: { filename: e.spec.path } };
  return {};
}

export const bdevMethods: Record<string, Method<RpcContext>> = {
  bdev_malloc_create: method(
    'create a RAM disk (malloc bdev)',
    {
      name: nonEmpty.optional(),
      num_blocks: numBlocks,
      block_size: blockSize,
      uuid: str.optional(),
      optimal_io_boundary: u32.optional(),
      ...metadataParams,
      populate: bool.optional().describe('vdx: allocate all memory at start, on huge pages where allowed'),
    },
    async (p, ctx) => {
      noMetadata(p);
      checkPhysical(p);
      const name = p.name ?? freeName(ctx, 'Malloc');
      const spec: BdevSpec = { type: 'malloc', name, size: String(p.num_blocks * p.block_size), 'block-size': String(p.block_size) };
      if (p.populate !== undefined) spec.populate = p.populate ? 'on' : 'off';
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_malloc_create')).desc.info.name;
    },
  ),
  bdev_malloc_delete: deleteMethod('malloc', 'malloc'),

  bdev_null_create: method(
    'create a null bdev (completes every I/O, stores nothing)',
    { name: nonEmpty.describe('bdev name'), num_blocks: numBlocks, block_size: blockSize, uuid: str.optional(), ...metadataParams },
    async (p, ctx) => {
      noMetadata(p);
      checkPhysical(p);
      const spec: BdevSpec = { type: 'null', name: p.name, size: String(p.num_blocks * p.block_size), 'block-size': String(p.block_size) };
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_null_create')).desc.info.name;
    },
  ),
  bdev_null_delete: deleteMethod('null', 'null'),
  bdev_null_resize: resizeMethod('null', 'change a null bdev\'s size; new_size in MiB, as SPDK'),

  bdev_aio_create: method(
    'create a file bdev on a file or block device (vdx drives it with io_uring; O_DIRECT unless direct=false)',
    { ...fileCreateParams, readonly: bool.optional(), fallocate: bool.optional(), direct: bool.optional().describe('vdx: O_DIRECT (default true, as SPDK)') },
    (p, ctx) => {
      if (p.fallocate) throw invalidParams('fallocate: vdx does not preallocate files; allocate the file yourself (fallocate -l SIZE FILE)');
      return createFile(ctx, p, p.readonly ?? false, p.direct ?? true, 'bdev_aio_create');
    },
  ),
  bdev_aio_delete: deleteMethod('file', 'file (aio)'),
  bdev_aio_rescan: method('re-read the size of a file bdev\'s file and tell its exports', { name: nonEmpty.describe('bdev name') }, async (p, ctx) => {
    if (ctx.bdevs.get(p.name).spec.type !== 'file') throw new ControlError(-19, `bdev '${p.name}' is not a file bdev`);
    await ctx.resizeBdev(p.name, undefined);
    return true;
  }),
  bdev_uring_create: method('create a file bdev driven by io_uring (O_DIRECT)', fileCreateParams, (p, ctx) =>
    createFile(ctx, p, false, true, 'bdev_uring_create'),
  ),
  bdev_uring_delete: deleteMethod('file', 'file (uring)'),

  bdev_create: method(
    'vdx: create a bdev from vdx\'s own keys (those of --bdev TYPE:key=value,...), values as strings',
    { type: nonEmpty.describe(`bdev type: ${Object.keys(BDEV_MODULES).join(', ')}`), name: nonEmpty.describe('bdev name'), keys: specKeys.optional() },
    async (p, ctx) => {
      if (!Object.hasOwn(BDEV_MODULES, p.type)) throw invalidParams(`type '${p.type}' is unknown; known types: ${Object.keys(BDEV_MODULES).join(', ')}`);
      return (await createBdev(ctx, { type: p.type, name: p.name, ...(p.keys ?? {}) })).desc.info.name;
    },
  ),
  bdev_delete: method('vdx: delete any bdev that nothing uses', { name: nonEmpty.describe('bdev name') }, async (p, ctx) => {
    await ctx.bdevs.delete(p.name);
    return true;
  }),
  bdev_resize: method(
    'vdx: change a bdev\'s capacity (file, null) and tell its exports; without size, re-read a file\'s size',
    { name: nonEmpty.describe('bdev name'), size: sizeArg.optional() },
    async (p, ctx) => ({ size_bytes: await ctx.resizeBdev(p.name, p.size) }),
  ),

  bdev_set_qos_limit: method(
    'limit a bdev\'s I/O per second and MiB per second (all, reads, writes) across every export and reactor on it; 0 lifts a limit, one not given stays',
    {
      name: nonEmpty.describe('bdev name'),
      rw_ios_per_sec: u64.optional().describe('I/O per second, reads and writes together'),
      rw_mbytes_per_sec: u64.optional().describe('MiB per second, reads and writes together'),
      r_mbytes_per_sec: u64.optional().describe('MiB per second of reads'),
      w_mbytes_per_sec: u64.optional().describe('MiB per second of writes'),
    },
    (p, ctx) => {
      const e = ctx.bdevs.get(p.name);
      const given = Object.fromEntries(QOS_LIMITS.filter((k) => p[k] !== undefined).map((k) => [k, p[k]!]));
      if (Object.keys(given).length === 0) throw invalidParams(`give at least one of ${QOS_LIMITS.join(', ')} (0 lifts that limit)`);
      setQosLimits(e.desc.qos!, given);
      return true;
    },
  ),

  bdev_get_bdevs: method(
    'list bdevs (or one), with SPDK\'s fields',
    { name: str.optional(), timeout: u32.optional() },
    (p, ctx) => (p.name ? [bdevInfoJson(ctx.bdevs.get(p.name))] : ctx.bdevs.list().map(bdevInfoJson)),
  ),
  bdev_get_iostat: method(
    'I/O counters per bdev (summed over the queues of the exports that use it); latency ticks are ns, tick_rate 1e9',
    { name: str.optional(), per_channel: bool.optional(), reset_mode: str.optional() },
    (p, ctx) => {
      if (p.per_channel) throw invalidParams('per_channel: vdx counts per export queue, not per channel; the metrics endpoint has the per-queue series');
      if (p.reset_mode !== undefined) throw invalidParams('reset_mode: vdx counters are never reset (they are monotonic, as Prometheus wants)');
      const names = p.name ? [ctx.bdevs.get(p.name).desc.info.name] : ctx.bdevs.list().map((e) => e.desc.info.name);
      return bdevIostat(ctx.counters.snapshot(), names);
    },
  ),
  bdev_wait_for_examine: method('returns at once: vdx examines no bdev (SPDK\'s save_config ends the bdev subsystem with it)', {}, () => true),
};

async function createFile(ctx: RpcContext, p: { name: string; filename: string; block_size?: number; uuid?: string }, readonly: boolean, direct: boolean, via: string): Promise<string> {
  const spec: BdevSpec = { type: 'file', name: p.name, path: p.filename, direct: direct ? 'on' : 'off', readonly: readonly ? 'on' : 'off' };
  if (p.block_size !== undefined) spec['block-size'] = String(p.block_size);
  if (p.uuid !== undefined) spec.uuid = p.uuid;
  return (await createBdev(ctx, spec, via)).desc.info.name;
}

