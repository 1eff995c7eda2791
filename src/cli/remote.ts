// Commands that talk to a running daemon over its JSON-RPC socket. An RPC
// error is one line and exit status 1; a usage error exit status 2.
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { bdevFromSpec, exportFromSpec, parseSpec } from '../config/config.js';
import { rpcCall, RpcCallError } from '../rpc/client.js';
import { DEFAULT_RPC_SOCKET } from '../daemon-options.js';

interface Conn {
  rpcSocket?: string;
}

/** An RPC failure is not a usage error: one line, no usage hint, exit status 1. */
function fail(what: string, e: unknown): never {
  const msg = e instanceof RpcCallError ? `${e.message} (code ${e.code})` : (e as Error).message;
  process.stderr.write(`vdx ${what}: ${msg}\n`);
  process.exit(1);
}

export async function call(what: string, o: Conn, method: string, params?: Record<string, unknown>): Promise<unknown> {
  try {
    return await rpcCall(o.rpcSocket ?? DEFAULT_RPC_SOCKET, method, params);
  } catch (e) {
    fail(what, e);
  }
}

function usage(program: Command, what: string, msg: string): never {
  program.error(`vdx ${what}: ${msg}`, { exitCode: 2 });
}

export function printTable(rows: Record<string, unknown>[], cols: string[]): void {
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '-').length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(w[i]!)).join('  ').trimEnd();
  process.stdout.write(`${line(cols.map((c) => c.toUpperCase()))}\n`);
  for (const r of rows) process.stdout.write(`${line(cols.map((c) => String(r[c] ?? '-')))}\n`);
}

function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** `key=value ...` -> params; a value that parses as JSON (numbers, true, objects) is taken as JSON, else as a string. */
export function paramsFromArgs(args: string[]): Record<string, unknown> | undefined {
  if (args.length === 0) return undefined;
  if (args.length === 1 && args[0]!.trim().startsWith('{')) {
    let v: unknown;
    try {
      v = JSON.parse(args[0]!);
    } catch (e) {
      throw new Error(`params are not JSON: ${(e as Error).message}`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('params must be a JSON object');
    return v as Record<string, unknown>;
  }
  const out: Record<string, unknown> = {};
  for (const a of args) {
    const eq = a.indexOf('=');
    if (eq <= 0) throw new Error(`'${a}' is not key=value (or give the params as one JSON object)`);
    const raw = a.slice(eq + 1);
    let v: unknown = raw;
    try {
      v = JSON.parse(raw);
    } catch {
      // a plain string
    }
    out[a.slice(0, eq)] = v;
  }
  return out;
}

const sockOpt = `daemon control socket (default ${DEFAULT_RPC_SOCKET})`;

export function addRemoteCommands(program: Command): void {
  program
    .command('rpc')
    .description('call any JSON-RPC method of the running daemon and print its result (rpc_get_methods lists them)')
    .argument('<method>', 'method name, e.g. bdev_get_bdevs')
    .argument('[params...]', 'one JSON object, or key=value pairs (values parsed as JSON where they can be)')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (m: string, args: string[], o: Conn) => {
      let params;
      try {
        params = paramsFromArgs(args);
      } catch (e) {
        usage(program, 'rpc', (e as Error).message);
      }
      printJson(await call('rpc', o, m, params));
    });

  const bdev = program.command('bdev').description('bdevs of the running daemon');
  bdev
    .command('create')
    .description('create a bdev: the same TYPE:key=value,... spec as vdx serve --bdev')
    .argument('<spec>', 'e.g. malloc:name=m0,size=1G')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (spec: string, o: Conn) => {
      let type: string, name: string | undefined, keys: Record<string, string>;
      try {
        const { type: t, name: n, ...k } = bdevFromSpec(spec);
        type = t;
        name = n;
        keys = k;
      } catch (e) {
        usage(program, 'bdev create', (e as Error).message);
      }
      const r = await call('bdev create', o, 'bdev_create', { type, name, keys });
      process.stdout.write(`${String(r)}\n`);
    });
  bdev
    .command('delete')
    .description('delete a bdev that no export uses')
    .argument('<name>')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (name: string, o: Conn) => {
      await call('bdev delete', o, 'bdev_delete', { name });
    });
  bdev
    .command('list')
    .description('the daemon\'s bdevs')
    .option('--rpc-socket <path>', sockOpt)
    .option('--json', 'print bdev_get_bdevs\' JSON')
    .action(async (o: Conn & { json?: boolean }) => {
      const rows = (await call('bdev list', o, 'bdev_get_bdevs')) as Record<string, unknown>[];
      if (o.json) return printJson(rows);
      printTable(
        rows.map((b) => ({
          name: b.name,
          type: b.product_name,
          size: Number(b.num_blocks) * Number(b.block_size),
          block_size: b.block_size,
          claimed_by: ((b.claimed_by as string[] | undefined) ?? []).join(', ') || '-',
        })),
        ['name', 'type', 'size', 'block_size', 'claimed_by'],
      );
    });

  const exp = program.command('export').description('exports (vhost-user controllers, VDUSE devices) of the running daemon');
  exp
    .command('create')
    .description('create an export: the same TYPE:key=value,... spec as vdx serve --export')
    .argument('<spec>', 'e.g. vhost-user:bdev=m0,socket=/run/vdx/m0.sock or vduse:bdev=m0,name=vduse0')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (spec: string, o: Conn) => {
      let type: string, keys: Record<string, string>;
      try {
        exportFromSpec(spec);
        ({ type, keys } = parseSpec('--export', spec));
      } catch (e) {
        usage(program, 'export create', (e as Error).message);
      }
      const r = (await call('export create', o, 'export_create', { type, keys })) as { name: string; node?: string; socket?: string };
      process.stdout.write(`${r.name}: ${r.socket ?? r.node ?? 'created'}\n`);
    });
  exp
    .command('delete')
    .description('delete an export; refused while a front-end uses it, unless --force')
    .argument('<name>')
    .option('--force', 'disconnect the front-end (vhost-user) or take the device away from its users (VDUSE)')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (name: string, o: Conn & { force?: boolean }) => {
      await call('export delete', o, 'export_delete', { name, force: o.force ?? false });
    });
  exp
    .command('list')
    .description('the daemon\'s exports')
    .option('--rpc-socket <path>', sockOpt)
    .option('--json', 'print JSON')
    .action(async (o: Conn & { json?: boolean }) => {
      const rows = (await call('export list', o, 'export_list')) as Record<string, unknown>[];
      if (o.json) return printJson(rows);
      printTable(rows, ['name', 'type', 'bdev', 'where', 'in_use']);
    });

  const vdpa = program.command('vdpa').description('VDUSE devices on the vDPA bus: list them, move them between virtio_vdpa and vhost_vdpa');
  vdpa
    .command('list')
    .description('the running daemon\'s VDUSE devices with their bus, driver and node (/dev/vdX or /dev/vhost-vdpa-N)')
    .option('--rpc-socket <path>', sockOpt)
    .option('--json', 'print JSON')
    .action(async (o: Conn & { json?: boolean }) => {
      const rows = (await call('vdpa list', o, 'vduse_get_devices')) as Record<string, unknown>[];
      if (o.json) printJson(rows);
      else printTable(rows, ['name', 'bdev', 'bus', 'driver', 'node']);
    });
  vdpa
    .command('bind')
    .description('move a running VDUSE device to another bus, keeping its data: virtio (/dev/vdX here) or vhost (/dev/vhost-vdpa-N for VMs); refused while the current node is in use')
    .argument('<name>', 'the device name')
    .argument('<bus>', 'virtio or vhost')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (name: string, bus: string, o: Conn) => {
      if (bus !== 'virtio' && bus !== 'vhost') usage(program, 'vdpa bind', `bus '${bus}' must be virtio or vhost`);
      const r = (await call('vdpa bind', o, 'vdpa_bind_device', { name, bus })) as { node: string };
      process.stdout.write(`${name}: ${r.node}\n`);
    });

  program
    .command('resize')
    .description('change a running bdev\'s capacity (file, null) and tell the drivers (VDUSE: config interrupt; vhost-user: CONFIG_CHANGE_MSG when the front-end offers a back-end channel, else its next GET_CONFIG)')
    .argument('<bdev>', 'bdev name')
    .argument('[size]', 'new size, e.g. 2G; omit after resizing the file or device yourself')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (name: string, size: string | undefined, o: Conn) => {
      const r = (await call('resize', o, 'bdev_resize', size === undefined ? { name } : { name, size })) as { size_bytes: number };
      process.stdout.write(`${name}: ${r.size_bytes} bytes\n`);
    });

  const config = program.command('config').description('the running daemon\'s configuration');
  config
    .command('save')
    .description('write the running configuration (SPDK\'s save_config format; vdx serve --config and rpc.py load_config replay it)')
    .argument('[file]', 'where to write it (default: standard output)')
    .option('--rpc-socket <path>', sockOpt)
    .action(async (file: string | undefined, o: Conn) => {
      const subs = (await call('config save', o, 'framework_get_subsystems')) as { subsystem: string }[];
      const doc = { subsystems: [] as { subsystem: string; config: unknown }[] };
      for (const s of subs) doc.subsystems.push({ subsystem: s.subsystem, config: await call('config save', o, 'framework_get_config', { name: s.subsystem }) });
      const text = `${JSON.stringify(doc, null, 2)}\n`;
      if (file) writeFileSync(file, text, { mode: 0o600 });
      else process.stdout.write(text);
    });
}
