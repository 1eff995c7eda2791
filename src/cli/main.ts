#!/usr/bin/env node
// vdx command line. Bad arguments end with one line saying what is wrong and
// what would be right, and exit code 2.
import { Command, InvalidArgumentError } from 'commander';
import { bdevFromSpec, configModules, type DaemonConfig, EXPORT_KEYS, exportFromSpec, loadConfigFile, parseCpumask, validateConfig } from '../config/config.js';
import { BDEV_MODULES, loadBdevModule, resolveModulePath } from '../bdev/registry.js';
import { ConfigError, DEFAULT_RPC_SOCKET, DEFAULT_STATE_DIR, DEFAULT_VHOST_SOCKET_DIR } from '../daemon-options.js';
import { ReactorPool } from '../core/reactor-pool.js';
import { rpcCall } from '../rpc/client.js';
import { addRemoteCommands, printTable } from './remote.js';
import { SystemdNotifier } from '../systemd/notify.js';
import { type MetricsAddr, parseMetricsAddr } from '../metrics/server.js';
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

/**
 * User bdev modules named by `serve --bdev-module PATH` (and a --config file's
 * "modules"), as absolute paths. They load before the command line is parsed,
 * so that --bdev knows their types.
 */
function bdevModulePaths(argv: string[]): string[] {
  if (argv[2] !== 'serve') return [];
  const paths: string[] = [];
  const value = (i: number, flag: string) => (argv[i] === flag ? argv[i + 1] : argv[i]!.startsWith(`${flag}=`) ? argv[i]!.slice(flag.length + 1) : undefined);
  for (let i = 3; i < argv.length; i++) {
    const m = value(i, '--bdev-module');
    if (m) paths.push(resolveModulePath(m));
    const c = value(i, '--config');
    if (c) paths.push(...configModules(c));
  }
  return [...new Set(paths)];
}

let bdevModules: string[] = [];
try {
  bdevModules = bdevModulePaths(process.argv);
  for (const path of bdevModules) await loadBdevModule(path);
} catch (e) {
  process.stderr.write(`vdx serve: ${(e as Error).message}\n`);
  process.exit(2);
}

const program = new Command();
program
  .name('vdx')
  .description('Userspace block device exporter: bdevs served to QEMU over vhost-user-blk, from TypeScript reactors.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  // Exit status: 0 for --help and --version, a program.error()'s own code, and 2
  // for every usage error commander finds (missing argument, unknown command or option).
  .exitOverride((err) => {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.help' || err.code === 'commander.version') process.exit(0);
    process.exit(err.code === 'commander.error' ? err.exitCode : 2);
  });

program
  .command('serve')
  .description(
    `Create bdevs and export them until SIGINT/SIGTERM. With no --bdev, --export or --config, serves a 1 GiB malloc bdev over vhost-user at ${DEFAULT_SOCKET}.`,
  )
  .option('--bdev <spec>', 'a bdev, TYPE:key=value,... (repeatable)', collect(bdevFromSpec), [])
  .option('--bdev-module <path>', 'an ES module whose default export is a bdev module (or an array of them): its types work like the built-in ones (repeatable; README: Writing a bdev module)', collect(String), [])
  .option('--export <spec>', 'an export, TYPE:key=value,... (repeatable)', collect(exportFromSpec), [])
  .option('--config <file>', 'a saved configuration (vdx config save, rpc.py save_config), or JSON with "bdevs", "exports", "reactors", "idleSpinUs"; merged with the options')
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
  .option('--rpc-socket <path>', `JSON-RPC socket (SPDK's protocol: rpc.py -s PATH, vdx rpc ...; default ${DEFAULT_RPC_SOCKET}; 'none' to disable)`)
  .option('--state-dir <dir>', `VDUSE devices' records and in-flight logs, and what RPC calls made, for a restarted vdx to take back (default ${DEFAULT_STATE_DIR})`)
  .option('--vhost-socket-dir <dir>', `where vhost_create_blk_controller puts controller sockets, like SPDK's -S (default ${DEFAULT_VHOST_SOCKET_DIR})`)
  .option('--metrics <addr:port>', 'serve Prometheus metrics at http://ADDR:PORT/metrics, e.g. 127.0.0.1:9110 (default off)', (v: string) => {
    try {
      return parseMetricsAddr(v);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
  })
  .option('--log-level <level>', 'trace, debug, info, warn, error (default info, or $VDX_LOG_LEVEL)')
  .option('--log-format <format>', 'json or pretty (default: pretty on a terminal, else json)')
  .addHelpText(
    'after',
    `\n${keyHelp('Bdev types and keys:', Object.fromEntries(Object.entries(BDEV_MODULES).map(([t, m]) => [t, m.keys])))}\n\n${keyHelp('Export types and keys:', EXPORT_KEYS)}\n\nExample:\n  vdx serve --bdev malloc:name=m0,size=1G --export vhost-user:bdev=m0,socket=/run/vdx/m0.sock,num-queues=2,serial=disk0`,
  )
  .action(async (o: { bdev: DaemonConfig['bdevs']; export: DaemonConfig['exports']; config?: string; reactors?: number; cpumask?: number[]; idleSpinUs?: number; rpcSocket?: string; stateDir?: string; vhostSocketDir?: string; metrics?: MetricsAddr; logLevel?: string; logFormat?: string }) => {
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
        ...(file.saved ? { saved: file.saved } : {}),
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
    const notifier = new SystemdNotifier({ log });
    const native = loadNative();
    // The reactors start first and load their modules while this thread loads
    // the daemon's: a restart serves again that much sooner.
    const pool = new ReactorPool(native, cfg.reactors, cfg.idleSpinUs, cfg.cpus, bdevModules);
    const { Daemon } = await import('../daemon.js');
    const daemon = new Daemon(native, cfg, log, { rpcSocket: rpc, vhostSocketDir: o.vhostSocketDir ?? DEFAULT_VHOST_SOCKET_DIR, metrics: o.metrics, stateDir: o.stateDir, pool });
    try {
      await daemon.start();
    } catch (e) {
      log.error(`vdx serve: ${(e as Error).message}`);
      notifier.status(`failed to start: ${(e as Error).message}`);
      // A configuration that cannot be replayed will not get better by restarting (the unit's RestartPreventExitStatus=2).
      process.exit(e instanceof ConfigError ? 2 : 1);
    }
    const serving = `serving ${daemon.bdevs.list().length} bdevs, ${daemon.exports.list().length} exports${rpc ? `; JSON-RPC at ${rpc}` : ''}`;
    notifier.ready(serving);
    log.info(serving);
    if (demo) {
      const lines = [
        `vdx: serving a 1 GiB malloc disk over vhost-user at ${DEFAULT_SOCKET}. Attach a QEMU guest with:`,
        `  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \\`,
        `    -chardev socket,id=vdx0,path=${DEFAULT_SOCKET} -device vhost-user-blk-pci,chardev=vdx0,num-queues=2`,
      ];
      if (cfg.exports.some((x) => x.type === 'vduse')) {
        const st = (await rpcCall(rpc ?? DEFAULT_RPC_SOCKET, 'vduse_get_devices').catch(() => [])) as { name: string; node?: string }[];
        lines.push(`vdx: and a second 1 GiB malloc disk over VDUSE: vdpa device vdx0 is ${st[0]?.node ?? 'on the vDPA bus'} ('vdx vdpa bind vdx0 vhost' hands it to VMs)`);
      }
      lines.push('Stop with Ctrl-C.', '');
      process.stdout.write(lines.join('\n'));
    }
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      // SIGUSR2: stop for an upgrade. In-flight I/O drains, VDUSE devices stay
      // (the next vdx re-attaches them), vhost-user front-ends reconnect.
      const keep = sig === 'SIGUSR2';
      log.info(keep ? `${sig}: stopping for an upgrade; VDUSE devices stay for the next vdx` : `${sig}: shutting down`);
      notifier.stopping(`${sig}: shutting down`);
      daemon.stop(keep ? 'all' : 'none').then(
        () => process.exit(0),
        (e: Error) => {
          log.error(`shutdown failed: ${e.message}`);
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGUSR2', () => stop('SIGUSR2'));
  });

addRemoteCommands(program);
const vdpa = program.commands.find((c) => c.name() === 'vdpa')!;

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

await program.parseAsync(process.argv);
