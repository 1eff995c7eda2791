// nbd bdev methods. SPDK has no NBD client (its nbd_* methods export a bdev
// through the kernel's /dev/nbdX), so these are vdx's own, in SPDK's style:
// snake_case parameters for the nbd bdev's keys.
import type { BdevSpec } from '../../control/bdevs.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, int, logicalBlockSize, nonEmpty, seconds, str } from '../schema.js';
import { createBdev, deleteMethod } from './bdev.js';
import type { RpcContext } from './context.js';

/** RPC parameter -> nbd bdev key (values stringified as on the command line). */
export const NBD_PARAMS: Record<string, string> = {
  uri: 'uri',
  host: 'host',
  port: 'port',
  path: 'path',
  export_name: 'export',
  connections: 'connections',
  read_only: 'readonly',
  reconnect_timeout: 'reconnect-timeout',
  connect_timeout: 'connect-timeout',
  io_timeout: 'io-timeout',
  block_size: 'block-size',
};

export const nbdMethods: Record<string, Method<RpcContext>> = {
  bdev_nbd_create: method(
    'vdx: create an nbd bdev, a client of an NBD server (uri, or host/port, or path)',
    {
      name: nonEmpty.describe('bdev name'),
      uri: nonEmpty.optional().describe('nbd://host[:port]/export or nbd+unix:///export?socket=PATH'),
      host: nonEmpty.optional().describe('server address'),
      port: int(1, 65535).optional().describe('server TCP port (default 10809)'),
      path: nonEmpty.optional().describe('server unix socket'),
      export_name: str.optional().describe('export name (default "")'),
      connections: int(1, 16).optional().describe('connections per reactor when the server allows multi-conn'),
      read_only: bool.optional(),
      reconnect_timeout: seconds.optional().describe('seconds I/O waits for a lost server before failing'),
      connect_timeout: seconds.optional().describe('seconds to reach the server at create'),
      io_timeout: seconds.optional().describe('seconds a request waits for its reply before the connection is dropped and retried; 0 = no deadline (default 30)'),
      block_size: logicalBlockSize.optional(),
      uuid: str.optional(),
    },
    async (p, ctx) => {
      const spec: BdevSpec = { type: 'nbd', name: p.name };
      for (const [param, key] of Object.entries(NBD_PARAMS)) {
        const v = (p as Record<string, unknown>)[param];
        if (v !== undefined) spec[key] = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
      }
      if (p.uri === undefined && p.host === undefined && p.path === undefined) throw invalidParams('name the server: uri, host (and port) or path');
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_nbd_create')).desc.info.name;
    },
  ),
  bdev_nbd_delete: deleteMethod('nbd', 'nbd'),
};
