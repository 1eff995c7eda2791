// Framework methods: the method list, version, subsystems and their saved
// configuration (what SPDK's rpc.py save_config collects and load_config
// replays), and the reactors.
import { cpumaskHex, parseCpumask } from '../../config/config.js';
import { ControlError, EBUSY } from '../../control/errors.js';
import type { ExportEntry } from '../../control/exports.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, nonEmpty } from '../schema.js';
import { reactorSchema } from '../../config/saved.js';
import { bdevConfigEntries } from './bdev-config.js';
import { rbdClusterConfig } from './bdev-rbd.js';
import type { RpcContext } from './context.js';
import { controllerParams } from './vhost.js';
import { vduseParams } from './vduse.js';

export const VERSION = { major: 0, minor: 1, patch: 0, suffix: '' };

export interface ConfigEntry {
  method: string;
  params: Record<string, unknown>;
}

/** Subsystems in the order a config is replayed: each after those it depends on. */
export const SUBSYSTEMS: { subsystem: string; depends_on: string[] }[] = [
  { subsystem: 'reactor', depends_on: [] },
  { subsystem: 'bdev', depends_on: [] },
  { subsystem: 'vhost_blk', depends_on: ['bdev'] },
  { subsystem: 'vduse', depends_on: ['bdev'] },
];

export function reactorParams(ctx: RpcContext): Record<string, unknown> {
  const r = ctx.reactors;
  return { count: r.count, ...(r.cpus.length ? { cpumask: cpumaskHex(r.cpus) } : {}), idle_spin_us: r.idleSpinUs };
}

export function subsystemConfig(ctx: RpcContext, name: string): ConfigEntry[] {
  switch (name) {
    case 'reactor':
      return [{ method: 'framework_set_reactors', params: reactorParams(ctx) }];
    case 'bdev':
      return [...rbdClusterConfig(ctx), ...bdevConfigEntries(ctx.bdevs.list()), { method: 'bdev_wait_for_examine', params: {} }];
    case 'vhost_blk':
      // As SPDK writes it: the coalescing of a controller that has it on follows its create.
      // An entry of its own also reaches an export the command line makes (the running state
      // skips that create on a restart, not what RPC calls changed of it since).
      return ctx.exports.list('vhost-user').flatMap((e) => {
        const c = (e as ExportEntry & { kind: 'vhost-user' }).cfg;
        return [{ method: 'vhost_create_blk_controller', params: controllerParams(c) }, ...coalescingEntry('vhost_controller_set_coalescing', { ctrlr: c.name }, c)];
      });
    case 'vduse':
      return ctx.exports.list('vduse').flatMap((e) => {
        const c = (e as ExportEntry & { kind: 'vduse' }).cfg;
        return [{ method: 'vduse_create_blk_device', params: vduseParams(c) }, ...coalescingEntry('vduse_set_coalescing', { name: c.name }, c)];
      });
    default:
      throw invalidParams(`Subsystem '${name}' not found; subsystems: ${SUBSYSTEMS.map((s) => s.subsystem).join(', ')}`);
  }
}


function coalescingEntry(method: string, names: Record<string, string>, c: { delayBaseUs: number; iopsThreshold: number }): ConfigEntry[] {
  return c.delayBaseUs === 0 ? [] : [{ method, params: { ...names, delay_base_us: c.delayBaseUs, iops_threshold: c.iopsThreshold } }];
}

export const frameworkMethods: Record<string, Method<RpcContext>> = {
  rpc_get_methods: method(
    'the methods this daemon answers; with current, those callable on a running daemon (rpc.py load_config skips the others)',
    { current: bool.optional(), include_aliases: bool.optional() },
    (p, ctx) => Object.entries(ctx.methods).filter(([, m]) => !p.current || !m.startupOnly).map(([name]) => name),
  ),
  spdk_get_version: method('vdx\'s version, in SPDK\'s shape', {}, () => ({
    version: `vdx v${VERSION.major}.${VERSION.minor}.${VERSION.patch}${VERSION.suffix}`,
    fields: VERSION,
  })),
  framework_wait_init: method('returns once the daemon serves its configuration (it does before it listens)', {}, () => true),
  framework_get_subsystems: method('subsystems and what each depends on', {}, () => SUBSYSTEMS),
  framework_get_config: method('one subsystem\'s configuration as method calls that recreate it', { name: nonEmpty.describe('subsystem name') }, (p, ctx) =>
    subsystemConfig(ctx, p.name),
  ),
  framework_set_reactors: method(
    'vdx: the reactors, fixed at start (vdx serve --config applies it first); on a running daemon it succeeds only when it matches',
    reactorSchema,
    (p, ctx) => {
      // cpumask was checked by its field
      const cpus = p.cpumask === undefined ? [] : parseCpumask(p.cpumask);
      const r = ctx.reactors;
      const same = p.count === r.count && cpumaskHex(cpus) === cpumaskHex(r.cpus) && (p.idle_spin_us ?? r.idleSpinUs) === r.idleSpinUs;
      if (!same) {
        throw new ControlError(EBUSY, `the reactors are fixed while vdx runs (now ${JSON.stringify(reactorParams(ctx))}); restart vdx with this configuration to change them`);
      }
      return true;
    },
    { startupOnly: true },
  ),
  framework_get_reactors: method('each reactor: its CPU, queues and counters', {}, async (_p, ctx) => {
    const stats = await Promise.all(ctx.pool.reactors.map((r) => r.stats()));
    return {
      reactors: ctx.pool.reactors.map((r, i) => ({ index: r.index, lcore: r.cpus[0] ?? null, ...stats[i] })),
    };
  }),
};
