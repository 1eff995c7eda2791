// vdx's frontend-neutral export methods: what `vdx export create|delete|list`
// call, with the keys of `--export TYPE:key=value,...`.
import type { ExportEntry } from '../../control/exports.js';
import { EXPORT_KEYS } from '../../config/config.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, nonEmpty, specKeys } from '../schema.js';
import type { RpcContext } from './context.js';
import { exportConfig } from './export-keys.js';

async function exportJson(ctx: RpcContext, e: ExportEntry): Promise<Record<string, unknown>> {
  if (e.kind === 'vhost-user') {
    return { name: e.cfg.name, type: e.kind, bdev: e.cfg.bdev, socket: e.cfg.socket, where: e.cfg.socket, in_use: e.impl.connected };
  }
  const st = await ctx.exports.vdpaState(e);
  return { name: e.cfg.name, type: e.kind, bdev: e.cfg.bdev, bus: st.bus, node: st.node ?? null, where: st.node ?? `/dev/vduse/${e.cfg.name}`, in_use: undefined };
}

export const exportMethods: Record<string, Method<RpcContext>> = {
  export_create: method(
    `vdx: create an export from vdx's own keys (those of --export TYPE:key=value,...); types: ${Object.keys(EXPORT_KEYS).join(', ')}`,
    { type: nonEmpty, keys: specKeys },
    async (p, ctx) => {
      if (p.type !== 'vhost-user' && p.type !== 'vduse') throw invalidParams(`type '${p.type}' is unknown; known types: ${Object.keys(EXPORT_KEYS).join(', ')}`);
      const { entry } = await ctx.exports.create(exportConfig(p.type, p.keys));
      return exportJson(ctx, entry);
    },
  ),
  export_delete: method('vdx: delete an export of either kind; refused while in use unless force', { name: nonEmpty, force: bool.optional() }, async (p, ctx) => {
    await ctx.exports.delete(p.name, undefined, p.force ?? false);
    return true;
  }),
  export_list: method('vdx: every export, both frontends', {}, (_p, ctx) => Promise.all(ctx.exports.list().map((e) => exportJson(ctx, e)))),
};
