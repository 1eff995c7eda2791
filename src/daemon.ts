// The running vdx: bdevs (main-thread descriptions), reactors, and exports.
import type { Logger } from 'pino';
import { bdevModule } from './bdev/registry.js';
import type { BdevDesc } from './bdev/types.js';
import type { DaemonConfig } from './config/config.js';
import { validateConfig } from './config/config.js';
import { ReactorPool } from './core/reactor-pool.js';
import { VhostUserExport } from './frontend/vhost-user/export.js';
import type { NativeShim } from './native/index.js';

export class Daemon {
  private pool: ReactorPool | undefined;
  private readonly bdevs = new Map<string, BdevDesc>();
  private readonly exports: VhostUserExport[] = [];

  constructor(
    private readonly native: NativeShim,
    private readonly config: DaemonConfig,
    private readonly log: Logger,
  ) {
    validateConfig(config);
  }

  async start(): Promise<void> {
    try {
      for (const b of this.config.bdevs) {
        const { type, ...spec } = b;
        const desc = bdevModule(type).create(spec);
        this.bdevs.set(desc.info.name, desc);
        this.log.info({ component: 'bdev', name: desc.info.name, type, sizeBytes: desc.info.sizeBytes }, 'bdev created');
      }
      this.pool = new ReactorPool(this.native, this.config.reactors, this.config.idleSpinUs);
      for (const r of this.pool.reactors) {
        r.on('log', (level, msg, data) => this.log[level]({ component: 'reactor', reactor: r.index, ...data }, msg));
      }
      for (const x of this.config.exports) {
        const e = new VhostUserExport(this.native, this.pool, this.bdevs.get(x.bdev)!, x, this.log);
        e.start();
        this.exports.push(e);
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  async stop(): Promise<void> {
    for (const e of this.exports.splice(0)) await e.stop();
    await this.pool?.shutdown();
    this.pool = undefined;
    for (const d of this.bdevs.values()) bdevModule(d.info.type).destroy(d);
    this.bdevs.clear();
  }

  async stats(): Promise<unknown[]> {
    return this.pool ? Promise.all(this.pool.reactors.map((r) => r.stats())) : [];
  }
}
