// Layered bdev methods, with SPDK's names and parameters
// (module/bdev/split/vbdev_split_rpc.c, module/bdev/passthru/vbdev_passthru_rpc.c).
import type { BdevSpec } from '../../control/bdevs.js';
import { MAX_SPLIT_PARTS } from '../../bdev/split.js';
import { ERROR_TYPES, IO_TYPES, inject } from '../../bdev/error.js';
import { DELAY_KEYS, MAX_DELAY_US, updateLatency, type DelayKey } from '../../bdev/delay.js';
import { ControlError } from '../../control/errors.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, int, logicalBlockSize, nonEmpty, oneOf, str, u32, u64 } from '../schema.js';
import { createBdev, createBdevs, deleteMethod } from './bdev.js';
import type { RpcContext } from './context.js';

const MiB = 1 << 20;
const latencyUs = int(0, MAX_DELAY_US);

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
  bdev_delay_create: method(
    'create a delay bdev on a base: reads and writes complete the given µs after the base completed them (p99: one in 100)',
    {
      base_bdev_name: nonEmpty.describe('the base bdev'),
      name: nonEmpty.describe('name of the delay bdev'),
      avg_read_latency: latencyUs.describe('µs added to reads'),
      p99_read_latency: latencyUs.describe('µs added to one read in 100'),
      avg_write_latency: latencyUs.describe('µs added to writes'),
      p99_write_latency: latencyUs.describe('µs added to one write in 100'),
      uuid: str.optional(),
    },
    async (p, ctx) => {
      const spec: BdevSpec = {
        type: 'delay', name: p.name, base: p.base_bdev_name,
        'avg-read-latency': String(p.avg_read_latency), 'p99-read-latency': String(p.p99_read_latency),
        'avg-write-latency': String(p.avg_write_latency), 'p99-write-latency': String(p.p99_write_latency),
      };
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_delay_create')).desc.info.name;
    },
  ),
  bdev_delay_delete: deleteMethod('delay', 'delay'),
  bdev_delay_update_latency: method(
    'change one latency of a delay bdev at run time',
    {
      delay_bdev_name: nonEmpty.describe('the delay bdev'),
      latency_type: oneOf('avg_read', 'p99_read', 'avg_write', 'p99_write'),
      latency_us: latencyUs.describe('the new latency in µs'),
    },
    (p, ctx) => {
      const e = ctx.bdevs.get(p.delay_bdev_name);
      if (e.spec.type !== 'delay') throw new ControlError(-22, `bdev '${p.delay_bdev_name}' is a ${e.spec.type} bdev, not a delay bdev`);
      const [which, rw] = p.latency_type.split('_') as [string, string];
      const key = `${which}-${rw}-latency` as DelayKey;
      if (!DELAY_KEYS.includes(key)) throw invalidParams(`latency_type=${p.latency_type}`);
      try {
        updateLatency(e.desc, key, p.latency_us);
      } catch (err) {
        throw invalidParams((err as Error).message);
      }
      e.spec[key] = String(p.latency_us);
      return true;
    },
  ),

  bdev_error_create: method(
    'create an error bdev EE_<base_name> on a base: it forwards I/O, and fails, corrupts or holds what bdev_error_inject_error says',
    { base_name: nonEmpty.describe('the base bdev'), uuid: str.optional() },
    async (p, ctx) => {
      const spec: BdevSpec = { type: 'error', name: `EE_${p.base_name}`, base: p.base_name };
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_error_create')).desc.info.name;
    },
  ),
  bdev_error_delete: deleteMethod('error', 'error'),
  bdev_error_inject_error: method(
    'fail (failure), hold (pending, until cleared) or corrupt (corrupt_data, reads) the next num I/Os of io_type on an error bdev; io_type clear ends every injection and lets held I/O go on',
    {
      name: nonEmpty.describe('the error bdev'),
      io_type: oneOf(...(Object.keys(IO_TYPES) as [string, ...string[]]), 'clear').describe('read, write, flush, unmap, write_zeroes, all, or clear'),
      error_type: oneOf(...(Object.keys(ERROR_TYPES) as [string, ...string[]])).optional().describe('failure, pending or corrupt_data (default failure)'),
      num: u32.optional().describe('how many I/Os (default 1; 0: until cleared)'),
      queue_depth: u32.optional(),
      corrupt_offset: u32.optional().describe('byte of the read data to change (corrupt_data)'),
      corrupt_value: int(1, 255).optional().describe('what the byte is XORed with (corrupt_data)'),
    },
    async (p, ctx) => {
      const e = ctx.bdevs.get(p.name);
      if (e.spec.type !== 'error') throw new ControlError(-22, `bdev '${p.name}' is a ${e.spec.type} bdev, not an error bdev`);
      if (p.queue_depth) throw invalidParams('queue_depth: vdx injects by count (num), not by queue depth; leave it out');
      const errorType = (p.error_type ?? 'failure') as keyof typeof ERROR_TYPES;
      if (errorType === 'corrupt_data' && p.io_type !== 'clear' && !p.corrupt_value) throw invalidParams('corrupt_data needs corrupt_value (1..255, XORed into the byte at corrupt_offset)');
      try {
        inject(e.desc, { ioType: p.io_type, errorType, num: p.num ?? 1, corruptOffset: p.corrupt_offset ?? 0, corruptValue: p.corrupt_value ?? 0 });
      } catch (err) {
        throw invalidParams((err as Error).message);
      }
      // Held I/O is released on the reactors that hold it.
      if (p.io_type === 'clear') await Promise.all(ctx.pool.reactors.map((r) => r.settingsChanged(p.name)));
      return true;
    },
  ),

  bdev_passthru_delete: deleteMethod('passthru', 'passthru'),

  bdev_crypto_create: method(
    'create a crypt bdev on a base: AES-XTS as dm-crypt plain mode (aes-xts-plain64) writes it, with the raw key read from key_file',
    {
      base_bdev_name: nonEmpty.describe('the bdev that holds the ciphertext'),
      name: nonEmpty.describe('name of the crypt bdev'),
      key_file: nonEmpty.optional().describe('vdx: file with the raw key, 32 or 64 bytes'),
      key_size: int(256, 512).where('256 or 512', (v) => v === 256 || v === 512).optional().describe('vdx: key size in bits (default: the file\'s length)'),
      cipher: oneOf('AES_XTS', 'aes-xts-plain64').optional(),
      sector_size: logicalBlockSize.optional().describe('vdx: encryption sector size, also the block size (512 or 4096; default 512)'),
      iv_large_sectors: bool.optional().describe('vdx: IVs in sector_size units (cryptsetup --iv-large-sectors)'),
      key_name: str.optional(),
      crypto_pmd: str.optional(),
      key: str.optional(),
      uuid: str.optional(),
    },
    async (p, ctx) => {
      if (p.key_name !== undefined || p.key !== undefined || p.crypto_pmd !== undefined) {
        throw invalidParams('key_name/key/crypto_pmd: vdx has no accel key store; give the raw key in a file, key_file (32 or 64 bytes)');
      }
      if (p.key_file === undefined) throw invalidParams('key_file is required: a file holding the raw key (32 or 64 bytes)');
      const spec: BdevSpec = { type: 'crypt', name: p.name, base: p.base_bdev_name, 'key-file': p.key_file };
      if (p.key_size !== undefined) spec['key-size'] = String(p.key_size);
      if (p.sector_size !== undefined) spec['sector-size'] = String(p.sector_size);
      if (p.iv_large_sectors !== undefined) spec['iv-large-sectors'] = p.iv_large_sectors ? 'on' : 'off';
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_crypto_create')).desc.info.name;
    },
  ),
  bdev_crypto_delete: deleteMethod('crypt', 'crypt'),
};
