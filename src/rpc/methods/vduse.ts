// vduse subsystem methods (vdx's own; SPDK has no VDUSE): a device is a virtio-blk
// /dev/vduse/NAME put on the vDPA bus, named in SPDK's style.
import type { VduseExportConfig } from '../../config/config.js';
import type { ExportEntry } from '../../control/exports.js';
import { method, type Method } from '../method.js';
import { bool, cpumaskField, int, logicalBlockSize, nonEmpty, oneOf, powerOfTwo, serialField, str } from '../schema.js';
import type { RpcContext } from './context.js';
import { exportConfig } from './export-keys.js';
import { allReactorsMask, coalescingFields } from './vhost.js';

type VduseEntry = ExportEntry & { kind: 'vduse' };

export async function vduseJson(ctx: RpcContext, e: VduseEntry): Promise<Record<string, unknown>> {
  const c = e.cfg;
  const st = await ctx.exports.vdpaState(e);
  return {
    name: c.name,
    bdev: c.bdev,
    vdpa_device: st.onBus ? st.name : null,
    bus: st.bus,
    driver: st.driver ?? null,
    node: st.node ?? null,
    num_queues: c.numQueues,
    queue_size: c.queueSize,
    readonly: c.readonly,
    packed_ring: c.packed,
    serial: c.serial,
    msg_timeout: st.msgTimeout ?? null,
    cpumask: c.cpumask ?? allReactorsMask(ctx),
    delay_base_us: c.delayBaseUs,
    iops_threshold: c.iopsThreshold,
  };
}

/** The parameters that recreate a device on the bus it is on now (save_config). */
export function vduseParams(c: VduseExportConfig): Record<string, unknown> {
  return {
    name: c.name,
    bdev_name: c.bdev,
    num_queues: c.numQueues,
    queue_size: c.queueSize,
    ...(c.logicalBlockSize !== undefined ? { logical_block_size: c.logicalBlockSize } : {}),
    serial: c.serial,
    readonly: c.readonly,
    packed_ring: c.packed,
    bus: c.bus,
    ...(c.msgTimeout !== undefined ? { msg_timeout: c.msgTimeout } : {}),
    ...(c.cpumask !== undefined ? { cpumask: c.cpumask } : {}),
  };
}

const bus = oneOf('virtio', 'vhost');

export const vduseMethods: Record<string, Method<RpcContext>> = {
  vduse_create_blk_device: method(
    'export a bdev as a VDUSE virtio-blk device: /dev/vdX (bus virtio), /dev/vhost-vdpa-N (bus vhost), or only /dev/vduse/NAME (none)',
    {
      name: nonEmpty.describe('VDUSE and vdpa device name'),
      bdev_name: nonEmpty.describe('bdev to export'),
      num_queues: int(1, 64).optional(),
      queue_size: powerOfTwo(2, 32768).optional(),
      logical_block_size: logicalBlockSize.optional(),
      serial: serialField.optional(),
      readonly: bool.optional(),
      packed_ring: bool.optional(),
      bus: oneOf('virtio', 'vhost', 'none').optional().describe('where the device goes (default virtio)'),
      msg_timeout: int(0, 86_400).optional().describe("seconds the kernel waits for a control message's answer before breaking the device (0: forever; default the kernel's 30)"),
      cpumask: cpumaskField.optional(),
      delay_base_us: coalescingFields.delay_base_us.optional().describe('interrupt coalescing, as vduse_set_coalescing (default 0: off)'),
      iops_threshold: coalescingFields.iops_threshold.optional(),
    },
    async (p, ctx) => {
      const cfg = exportConfig('vduse', {
        name: p.name,
        bdev: p.bdev_name,
        'num-queues': p.num_queues,
        'queue-size': p.queue_size,
        'logical-block-size': p.logical_block_size,
        serial: p.serial,
        readonly: p.readonly,
        packed: p.packed_ring,
        bus: p.bus,
        'msg-timeout': p.msg_timeout,
        cpumask: p.cpumask,
        'delay-base-us': p.delay_base_us,
        'iops-threshold': p.iops_threshold,
      });
      const { entry } = await ctx.exports.create(cfg);
      return vduseJson(ctx, entry as VduseEntry);
    },
  ),
  vduse_delete_device: method(
    'take a VDUSE device off the bus and destroy it; refused while its node is open or mounted unless force',
    { name: nonEmpty, force: bool.optional() },
    async (p, ctx) => {
      await ctx.exports.delete(p.name, 'vduse', p.force ?? false);
      return true;
    },
  ),
  vduse_set_coalescing: method(
    "hold a VDUSE device's interrupts back above an IOPS threshold, as vhost_controller_set_coalescing does for a vhost controller (applies to its running queues at once)",
    { name: nonEmpty, ...coalescingFields },
    async (p, ctx) => {
      await ctx.exports.setCoalescing(p.name, 'vduse', { delayBaseUs: p.delay_base_us, iopsThreshold: p.iops_threshold });
      return true;
    },
  ),
  vduse_get_devices: method('list VDUSE devices (or one) with their bus, driver and node', { name: str.optional() }, async (p, ctx) => {
    const list = p.name ? [ctx.exports.get(p.name, 'vduse')] : ctx.exports.list('vduse');
    return Promise.all(list.map((e) => vduseJson(ctx, e as VduseEntry)));
  }),
  vdpa_bind_device: method(
    'move a VDUSE device to the other bus at run time, keeping its data: virtio (/dev/vdX) or vhost (/dev/vhost-vdpa-N); refused while its node is in use',
    { name: nonEmpty, bus },
    async (p, ctx) => {
      await ctx.exports.bind(p.name, p.bus);
      return vduseJson(ctx, ctx.exports.get(p.name, 'vduse') as VduseEntry);
    },
  ),
};
