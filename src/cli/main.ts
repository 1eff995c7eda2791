#!/usr/bin/env node
// vdx command line. Bad arguments end with one line saying what is wrong and
// what would be right, and exit code 2.
import { Command, InvalidArgumentError } from 'commander';
import { bdevFromSpec, type DaemonConfig, EXPORT_KEYS, exportFromSpec, loadConfigFile, validateConfig } from '../config/config.js';
import { BDEV_MODULES } from '../bdev/registry.js';
import { Daemon } from '../daemon.js';
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
  .option('--reactors <n>', 'reactor threads', positiveInt('--reactors', 64))
  .option('--idle-spin-us <us>', 'how long a reactor keeps polling after its last work before it sleeps (default 200)', (v: string) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError('--idle-spin-us must be a whole number of microseconds');
    return Number(v);
  })
  .option('--log-level <level>', 'trace, debug, info, warn, error (default info, or $VDX_LOG_LEVEL)')
  .option('--log-format <format>', 'json or pretty (default: pretty on a terminal, else json)')
  .addHelpText(
    'after',
    `\n${keyHelp('Bdev types and keys:', Object.fromEntries(Object.entries(BDEV_MODULES).map(([t, m]) => [t, m.keys])))}\n\n${keyHelp('Export types and keys:', EXPORT_KEYS)}\n\nExample:\n  vdx serve --bdev malloc:name=m0,size=1G --export vhost-user:bdev=m0,socket=/run/vdx/m0.sock,num-queues=2,serial=disk0`,
  )
  .action(async (o: { bdev: DaemonConfig['bdevs']; export: DaemonConfig['exports']; config?: string; reactors?: number; idleSpinUs?: number; logLevel?: string; logFormat?: string }) => {
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
      cfg = {
        reactors: o.reactors ?? file.reactors ?? 1,
        idleSpinUs: o.idleSpinUs ?? file.idleSpinUs ?? 200,
        bdevs: [...(file.bdevs ?? []), ...o.bdev],
        exports: [...(file.exports ?? []), ...o.export],
      };
      if (cfg.bdevs.length === 0 && cfg.exports.length === 0 && !o.config) {
        demo = true;
        cfg.bdevs.push(bdevFromSpec('malloc:name=malloc0,size=1G'));
        cfg.exports.push(exportFromSpec(`vhost-user:bdev=malloc0,socket=${DEFAULT_SOCKET},num-queues=2`));
      }
      validateConfig(cfg);
    } catch (e) {
      program.error(`vdx serve: ${(e as Error).message}`, { exitCode: 2 });
    }
    const daemon = new Daemon(loadNative(), cfg, log);
    try {
      await daemon.start();
    } catch (e) {
      log.error(`vdx serve: ${(e as Error).message}`);
      process.exit(1);
    }
    if (demo) {
      process.stdout.write(
        [
          `vdx: serving a 1 GiB malloc disk over vhost-user at ${DEFAULT_SOCKET}. Attach a QEMU guest with:`,
          `  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem \\`,
          `    -chardev socket,id=vdx0,path=${DEFAULT_SOCKET} -device vhost-user-blk-pci,chardev=vdx0,num-queues=2`,
          'Stop with Ctrl-C.',
          '',
        ].join('\n'),
      );
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

await program.parseAsync(process.argv);
