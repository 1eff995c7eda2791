// vhost_blk subsystem methods (SPDK's lib/vhost/vhost_rpc.c): a controller is a
// vhost-user-blk socket `<--vhost-socket-dir>/<ctrlr>`. vdx extensions are
// extra optional parameters (num_queues, queue_size, serial, socket, ...).
import { join } from 'node:path';
import { cpumaskHex, type VhostUserExportConfig } from '../../config/config.js';
import type { ExportEntry } from '../../control/exports.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, cpumaskField, fileMode, int, logicalBlockSize, nonEmpty, oneOf, serialField, str } from '../schema.js';
import type { RpcContext } from './context.js';
import { exportConfig } from './export-keys.js';
import { MAX_DELAY_BASE_US, MIN_IOPS_THRESHOLD } from '../../virtio/coalescing.js';

/** vhost_controller_set_coalescing's and vduse_set_coalescing's parameters */
export const coalescingFields = {
  delay_base_us: int(0, MAX_DELAY_BASE_US).describe('base delay between interrupts of a queue above the threshold, µs (0: off)'),
  iops_threshold: int(MIN_IOPS_THRESHOLD, 0xffff_ffff).describe('IOPS per queue above which interrupts are coalesced; the delay grows with the excess: delay_base_us x (IOPS - threshold) / threshold'),
};

/** The CPUs (or, unpinned, reactor numbers) every reactor stands for: an export's cpumask when it has none. */
export function allReactorsMask(ctx: RpcContext): string {
  const rs = ctx.pool.reactors;
  return cpumaskHex(rs.every((r) => r.cpus.length) ? rs.map((r) => r.cpus[0]!) : rs.map((r) => r.index));
}

export function controllerJson(ctx: RpcContext, e: ExportEntry & { kind: 'vhost-user' }): Record<string, unknown> {
  const c = e.cfg;
  return {
    ctrlr: c.name,
    cpumask: c.cpumask ?? allReactorsMask(ctx),
    delay_base_us: c.delayBaseUs,
    iops_threshold: c.iopsThreshold,
    socket: c.socket,
    sessions: e.impl.connected ? [{ id: e.impl.sessionCount, name: `${c.name}s${e.impl.sessionCount}` }] : [],
    backend_specific: {
      block: { readonly: c.readonly, bdev: c.bdev, transport: 'vhost_user_blk' },
    },
    num_queues: c.numQueues,
    queue_size: c.queueSize,
    packed_ring: c.packed,
    serial: c.serial,
  };
}

/** The parameters that recreate a controller (save_config). */
export function controllerParams(c: VhostUserExportConfig): Record<string, unknown> {
  return {
    ctrlr: c.name,
    dev_name: c.bdev,
    ...(c.cpumask !== undefined ? { cpumask: c.cpumask } : {}),
    readonly: c.readonly,
    packed_ring: c.packed,
    socket: c.socket,
    num_queues: c.numQueues,
    queue_size: c.queueSize,
    serial: c.serial,
    ...(c.logicalBlockSize !== undefined ? { logical_block_size: c.logicalBlockSize } : {}),
    socket_mode: `0${c.mode.toString(8)}`,
  };
}

export const vhostMethods: Record<string, Method<RpcContext>> = {
  vhost_create_blk_controller: method(
    'export a bdev as a vhost-user-blk socket <vhost socket dir>/<ctrlr>',
    {
      ctrlr: nonEmpty.where('1-64 letters, digits, ".", "_" or "-" (it names the socket file)', (s) => /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(s)).describe('controller name, the socket file name'),
      dev_name: nonEmpty.describe('bdev to export'),
      cpumask: cpumaskField.optional(),
      readonly: bool.optional(),
      packed_ring: bool.optional(),
      packed_ring_recovery: bool.optional(),
      transport: oneOf('vhost_user_blk').optional(),
      num_queues: int(1, 64).optional().describe('vdx: virtqueues offered (default 1)'),
      queue_size: int(4, 32768).optional().describe('vdx: largest virtqueue the front-end will use (default 128)'),
      serial: serialField.optional(),
      logical_block_size: logicalBlockSize.optional(),
      socket: nonEmpty.optional().describe('vdx: socket path instead of <vhost socket dir>/<ctrlr>'),
      socket_mode: fileMode.optional().describe('vdx: socket file mode, octal (default 0600)'),
    },
    async (p, ctx) => {
      if (p.packed_ring_recovery) throw invalidParams('packed_ring_recovery: vdx keeps no in-flight record for packed rings yet');
      const cfg = exportConfig('vhost-user', {
        name: p.ctrlr,
        bdev: p.dev_name,
        socket: p.socket ?? join(ctx.vhostSocketDir, p.ctrlr),
        cpumask: p.cpumask,
        readonly: p.readonly,
        packed: p.packed_ring,
        'num-queues': p.num_queues,
        'queue-size': p.queue_size,
        serial: p.serial,
        'logical-block-size': p.logical_block_size,
        mode: p.socket_mode,
      });
      await ctx.exports.create(cfg);
      return true;
    },
  ),
  vhost_delete_controller: method(
    'delete a vhost controller; refused while a front-end is connected unless force',
    { ctrlr: nonEmpty, force: bool.optional().describe('vdx: disconnect a connected front-end') },
    async (p, ctx) => {
      await ctx.exports.delete(p.ctrlr, 'vhost-user', p.force ?? false);
      return true;
    },
  ),
  vhost_controller_set_coalescing: method(
    "hold a controller's interrupts back above an IOPS threshold, so a guest wakes for more completions at a time (applies to its running queues at once)",
    { ctrlr: nonEmpty, ...coalescingFields },
    async (p, ctx) => {
      await ctx.exports.setCoalescing(p.ctrlr, 'vhost-user', { delayBaseUs: p.delay_base_us, iopsThreshold: p.iops_threshold });
      return true;
    },
  ),
  vhost_get_controllers: method('list vhost controllers (or one)', { name: str.optional() }, (p, ctx) => {
    const list = p.name ? [ctx.exports.get(p.name, 'vhost-user')] : ctx.exports.list('vhost-user');
    return list.map((e) => controllerJson(ctx, e as ExportEntry & { kind: 'vhost-user' }));
  }),
};
