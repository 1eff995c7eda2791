// Exporters under test. The e2e checks take one as a parameter, so the peer
// (qemu-storage-daemon) and vdx face the very same checks.
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { LOG_DIR, REPO, exited, spawnTracked, waitForPath } from './vm.js';

export interface VhostUserExportSpec {
  /** unix socket path the exporter listens on */
  socket: string;
  /** raw image file backing the export */
  image: string;
  queues: number;
}

/** Serves a vhost-user-blk socket on the host. */
export interface VhostUserExporter {
  readonly name: string;
  start(spec: VhostUserExportSpec): Promise<void>;
  stop(): Promise<void>;
}

/** VDUSE exporters run inside the guest: the name of a file in test/e2e/guest/exporters/. */
export type VduseExporter = 'qsd-vduse' | 'vdx-vduse';

export class QsdVhostUser implements VhostUserExporter {
  readonly name = 'qemu-storage-daemon';
  private child: ChildProcess | undefined;

  async start(s: VhostUserExportSpec): Promise<void> {
    const args = [
      '--blockdev', `file,node-name=disk,filename=${s.image},cache.direct=off`,
      '--export',
      `vhost-user-blk,id=exp0,node-name=disk,addr.type=unix,addr.path=${s.socket},writable=on,num-queues=${s.queues}`,
    ];
    this.child = spawnTracked('qemu-storage-daemon', args);
    mkdirSync(LOG_DIR, { recursive: true });
    const log = createWriteStream(join(LOG_DIR, 'qsd-vhost-user.log'));
    this.child.stdout?.pipe(log);
    this.child.stderr?.pipe(log);
    await waitForPath(s.socket, this.child, 'qemu-storage-daemon');
  }

  async stop(): Promise<void> {
    if (!this.child) return;
    this.child.kill('SIGTERM');
    await exited(this.child);
    this.child = undefined;
  }
}

export interface VdxOptions {
  /** bdev spec for the image, e.g. 'file:path=IMAGE' or 'malloc:size=64M' (name is added) */
  bdev?: (image: string) => string;
  /** extra vhost-user export keys, e.g. 'serial=disk0,readonly=on' */
  exportKeys?: string;
  reactors?: number;
  /** more `vdx serve` arguments, e.g. ['--cpumask', '0x3'] */
  extraArgs?: string[];
  logName?: string;
  /** the daemon's JSON-RPC socket, for tests that manage it while a guest runs (default: none) */
  rpcSocket?: string;
}

/** vdx itself, from dist/ (npm test builds it first). */
export class VdxVhostUser implements VhostUserExporter {
  readonly name: string;
  private child: ChildProcess | undefined;
  logPath = '';

  constructor(private readonly o: VdxOptions = {}) {
    this.name = o.logName ?? 'vdx';
  }

  async start(s: VhostUserExportSpec): Promise<void> {
    const bdev = `${(this.o.bdev ?? ((img: string) => `file:path=${img}`))(s.image)},name=d0`;
    const exp = `vhost-user:bdev=d0,socket=${s.socket},num-queues=${s.queues}${this.o.exportKeys ? `,${this.o.exportKeys}` : ''}`;
    const args = [join(REPO, 'dist/cli/main.js'), 'serve', '--bdev', bdev, '--export', exp, '--log-format', 'json', '--rpc-socket', this.o.rpcSocket ?? 'none'];
    if (this.o.reactors) args.push('--reactors', String(this.o.reactors));
    args.push(...(this.o.extraArgs ?? []));
    this.child = spawnTracked(process.execPath, args);
    this.logPath = join(LOG_DIR, `${this.name}.log`);
    mkdirSync(LOG_DIR, { recursive: true });
    const log = createWriteStream(this.logPath);
    this.child.stdout?.pipe(log);
    this.child.stderr?.pipe(log);
    await waitForPath(s.socket, this.child, 'vdx');
  }

  /** The running daemon, for tests that look at it from outside (CPU, logs). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  async stop(): Promise<void> {
    if (!this.child) return;
    this.child.kill('SIGTERM');
    const code = await exited(this.child);
    this.child = undefined;
    if (code !== 0) throw new Error(`vdx exited with ${code} on SIGTERM (log: ${this.logPath})`);
  }
}
