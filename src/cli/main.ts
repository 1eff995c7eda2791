#!/usr/bin/env node
// vdx command line. Bad arguments end with one line saying what is wrong and
// what would be right, and exit code 2.
import { Command, InvalidArgumentError } from 'commander';
import { bdevFromSpec, type DaemonConfig, EXPORT_KEYS, exportFromSpec, loadConfigFile, parseCpumask, validateConfig } from '../config/config.js';
import { BDEV_MODULES } from '../bdev/registry.js';
import { DEFAULT_RPC_SOCKET, Daemon } from '../daemon.js';
import { rpcCall } from '../rpc/server.js';
import { VdpaClient } from '../vdpa/client.js';
import { existsSync } from 'node:fs';
import { createLogger } from '../log/logger.js';
import { loadNative } from '../native/index.js';

const DEFAULT_SOCKET = '/run/vdx/vdx0.sock';

function keyHelp(title: string, table: Record<string, Record<string, string>>): string {
  const lines = [title];
  for (const [type, keys] of Object.entries(table)) {
    lines.push(`  ${type}:`);
    for (const [k, v] of Object.entries(keys)) lines.push(`    ${k.padEnd(12)} ${v}`);
  }
  return lines.join('\n');
}

function collect(parse: (s: string) => unknown) {
  return (value: string, prev: unknown[] = []) => {
    try {
      return [...prev, parse(value)];
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  };
}

function positiveInt(name: string, max: number) {
  return (v: string) => {
    if (!/^\d+$/.test(v) || Number(v) < 1 || Number(v) > max) throw new InvalidArgumentError(`${name} must be an integer in 1..${max}`);
    return Number(v);
  };
}

const program = new Command();
program
  .name('vdx')
  .description('Userspace block device exporter: bdevs served to QEMU over vhost-user-blk, from TypeScript reactors.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)');

program
  .command('serve')
  .description(
    `Create bdevs and export them until SIGINT/SIGTERM. With no --bdev, --export or --config, serves a 1 GiB malloc bdev over vhost-user at ${DEFAULT_SOCKET}.`,
  )
  .option('--bdev <spec>', 'a bdev, TYPE:key=value,... (repeatable)', collect(bdevFromSpec), [])
  .option('--export <spec>', 'an export, TYPE:key=value,... (repeatable)', collect(exportFromSpec), [])
  .option('--config <file>', 'JSON file with "bdevs", "exports", "reactors", "idleSpinUs"; merged with the options')
  .option('--reactors <n>', 'reactor threads (default 1, or one per CPU of --cpumask)', positiveInt('--reactors', 64))
  .option('--cpumask <mask>', 'pin reactors to these CPUs, one each in turn: a hex mask (0x3) or a list (0,2-3)', (v: string) => {
    try {
      return parseCpumask(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  })
  .option('--idle-spin-us <us>', 'how long a reactor keeps polling after its last work before it sleeps (default 200)', (v: string) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError('--idle-spin-us must be a whole number of microseconds');
    return Number(v);
  })
  .option('--rpc-socket <path>', `control socket for 'vdx vdpa ...' (default ${DEFAULT_RPC_SOCKET}; 'none' to disable)`)
  .option('--log-level <level>', 'trace, debug, info, warn, error (default info, or $VDX_LOG_LEVEL)')
  .option('--log-format <format>', 'json or pretty (default: pretty on a terminal, else json)')
  .addHelpText(
    'after',
    `\n${keyHelp('Bdev types and keys:', Object.fromEntries(Object.entries(BDEV_MODULES).map(([t, m]) => [t, m.keys])))}\n\n${keyHelp('Export types and keys:', EXPORT_KEYS)}\n\nExample:\n  vdx serve --bdev malloc:name=m0,size=1G --export vhost-user:bdev=m0,socket=/run/vdx/m0.sock,num-queues=2,serial=disk0`,
  )
  .action(async (o: { bdev: DaemonConfig['bdevs']; export: DaemonConfig['exports']; config?: string; reactors?: number; cpumask?: number[]; idleSpinUs?: number; rpcSocket?: string; logLevel?: string; logFormat?: string }) => {
    if (o.logFormat !== undefined && o.logFormat !== 'json' && o.logFormat !== 'pretty') {
      program.error(`--log-format ${o.logFormat}: must be json or pretty`, { exitCode: 2 });
    }
    if (o.logLevel !== undefined && !['trace', 'debug', 'info', 'warn', 'error'].includes(o.logLevel)) {
      program.error(`--log-level ${o.logLevel}: must be trace, debug, info, warn or error`, { exitCode: 2 });
    }
    const log = createLogger({ level: o.logLevel, pretty: o.logFormat === undefined ? undefined : o.logFormat === 'pretty' });
    let cfg!: DaemonConfig;
    let demo = false;
    try {
      const file = o.config ? loadConfigFile(o.config) : {};
      const cpus = o.cpumask ?? file.cpus ?? [];
      cfg = {
        reactors: o.reactors ?? file.reactors ?? (cpus.length || 1),
        cpus,
        idleSpinUs: o.idleSpinUs ?? file.idleSpinUs ?? 200,
        bdevs: [...(file.bdevs ?? []), ...o.bdev],
        exports: [...(file.exports ?? []), ...o.export],
      };
      if (cfg.bdevs.length === 0 && cfg.exports.length === 0 && !o.config) {
        demo = true;
        cfg.bdevs.push(bdevFromSpec('malloc:name=malloc0,size=1G'));
        cfg.exports.push(exportFromSpec(`vhost-user:bdev=malloc0,socket=${DEFAULT_SOCKET},num-queues=2`));
        // Where the kernel can host it, the same disk also appears on this host as /dev/vdX.
        if (existsSync('/dev/vduse/control')) {
          cfg.bdevs.push(bdevFromSpec('malloc:name=malloc1,size=1G'));
          cfg.exports.push(exportFromSpec('vduse:bdev=malloc1,name=vdx0,num-queues=2,bus=virtio'));
        }
      }
      validateConfig(cfg);
    } catch (e) {
      program.error(`vdx serve: ${(e as Error).message}`, { exitCode: 2 });
    }
    const rpc = o.rpcSocket === 'none' ? null : (o.rpcSocket ?? DEFAULT_RPC_SOCKET);
    const daemon = new Daemon(loadNative(), cfg, log, rpc);
    try {
      await daemon.start();
    } catch (e) {
      log.error(`vdx serve: ${(e as Error).message}`);
      process.exit(1);
    }
    if (demo) {
      const lines = [
        `vdx: serving a 1 GiB malloc disk over vhost-user at ${DEFAULT_SOCKET}. Attach a QEMU guest with:`,
        `  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \\`,
        `    -chardev socket,id=vdx0,path=${DEFAULT_SOCKET} -device vhost-user-blk-pci,chardev=vdx0,num-queues=2`,
      ];
      if (cfg.exports.some((x) => x.type === 'vduse')) {
        const st = (await rpcCall(rpc ?? DEFAULT_RPC_SOCKET, 'vdpa_list').catch(() => [])) as { name: string; node?: string }[];
        lines.push(`vdx: and a second 1 GiB malloc disk over VDUSE: vdpa device vdx0 is ${st[0]?.node ?? 'on the vDPA bus'} ('vdx vdpa bind vdx0 vhost' hands it to VMs)`);
      }
      lines.push('Stop with Ctrl-C.', '');
      process.stdout.write(lines.join('\n'));
    }
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info(`${sig}: shutting down`);
      daemon.stop().then(
        () => process.exit(0),
        (e: Error) => {
          log.error(`shutdown failed: ${e.message}`);
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });

const vdpa = program.command('vdpa').description('VDUSE devices on the vDPA bus: list them, move them between virtio_vdpa and vhost_vdpa');

function printTable(rows: Record<string, unknown>[], cols: string[]): void {
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '-').length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(w[i]!)).join('  ').trimEnd();
  process.stdout.write(`${line(cols.map((c) => c.toUpperCase()))}\n`);
  for (const r of rows) process.stdout.write(`${line(cols.map((c) => String(r[c] ?? '-')))}\n`);
}

async function daemonCall(o: { rpcSocket?: string }, method: string, params: Record<string, unknown> = {}): Promise<unknown> {
  try {
    return await rpcCall(o.rpcSocket ?? DEFAULT_RPC_SOCKET, method, params);
  } catch (e) {
    program.error(`vdx vdpa: ${(e as Error).message}`, { exitCode: 1 });
  }
}

vdpa
  .command('list')
  .description('the running daemon\'s VDUSE exports with their bus, driver and node (/dev/vdX or /dev/vhost-vdpa-N)')
  .option('--rpc-socket <path>', `daemon control socket (default ${DEFAULT_RPC_SOCKET})`)
  .option('--json', 'print JSON')
  .action(async (o: { rpcSocket?: string; json?: boolean }) => {
    const rows = (await daemonCall(o, 'vdpa_list')) as Record<string, unknown>[];
    if (o.json) process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    else printTable(rows, ['name', 'bdev', 'bus', 'driver', 'node']);
  });

vdpa
  .command('bind')
  .description('move a running VDUSE export to another bus, keeping its data: virtio (/dev/vdX here) or vhost (/dev/vhost-vdpa-N for VMs); refused while the current node is in use')
  .argument('<name>', 'the export (vdpa device) name')
  .argument('<bus>', 'virtio or vhost')
  .option('--rpc-socket <path>', `daemon control socket (default ${DEFAULT_RPC_SOCKET})`)
  .action(async (name: string, bus: string, o: { rpcSocket?: string }) => {
    if (bus !== 'virtio' && bus !== 'vhost') program.error(`vdx vdpa bind: bus '${bus}' must be virtio or vhost`, { exitCode: 2 });
    const r = (await daemonCall(o, 'vdpa_bind', { name, bus })) as { node: string };
    process.stdout.write(`${name}: ${r.node}\n`);
  });

vdpa
  .command('mgmtdev')
  .description('vdpa management devices, straight from the kernel over netlink (no daemon needed)')
  .action(async () => {
    try {
      const c = await VdpaClient.open(loadNative());
      const rows = (await c.mgmtdevs()).map((m) => ({
        name: m.bus ? `${m.bus}/${m.name}` : m.name,
        classes: [...Array(64).keys()].filter((b) => (m.supportedClasses >> BigInt(b)) & 1n).map((b) => ({ 1: 'net', 2: 'block' })[b] ?? `id${b}`).join(' '),
        max_vqs: m.maxVqs,
      }));
      c.close();
      printTable(rows, ['name', 'classes', 'max_vqs']);
    } catch (e) {
      program.error(`vdx vdpa mgmtdev: ${(e as Error).message}`, { exitCode: 1 });
    }
  });

vdpa
  .command('devices')
  .description('every vdpa device, straight from the kernel over netlink (no daemon needed)')
  .action(async () => {
    try {
      const c = await VdpaClient.open(loadNative());
      const rows = (await c.devices()).map((d) => ({ ...d }) as Record<string, unknown>);
      c.close();
      printTable(rows, ['name', 'mgmtdev', 'deviceId', 'maxVqs', 'maxVqSize']);
    } catch (e) {
      program.error(`vdx vdpa devices: ${(e as Error).message}`, { exitCode: 1 });
    }
  });

program
  .command('resize')
  .description('change a running file bdev\'s capacity and tell the drivers (VDUSE: config interrupt; vhost-user: next GET_CONFIG)')
  .argument('<bdev>', 'bdev name')
  .argument('[size]', 'new size, e.g. 2G; omit after resizing the file or device yourself')
  .option('--rpc-socket <path>', `daemon control socket (default ${DEFAULT_RPC_SOCKET})`)
  .action(async (name: string, size: string | undefined, o: { rpcSocket?: string }) => {
    try {
      const r = (await rpcCall(o.rpcSocket ?? DEFAULT_RPC_SOCKET, 'bdev_resize', size === undefined ? { name } : { name, size })) as { sizeBytes: number };
      process.stdout.write(`${name}: ${r.sizeBytes} bytes\n`);
    } catch (e) {
      program.error(`vdx resize: ${(e as Error).message}`, { exitCode: 1 });
    }
  });

await program.parseAsync(process.argv);
