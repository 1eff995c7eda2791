// The running vdx: bdevs (main-thread descriptions), reactors, exports, and the
// control socket.
import type { Logger } from 'pino';
import { bdevModule } from './bdev/registry.js';
import type { BdevDesc } from './bdev/types.js';
import type { DaemonConfig } from './config/config.js';
import { validateConfig } from './config/config.js';
import { ReactorPool } from './core/reactor-pool.js';
import { VduseExport } from './frontend/vduse/export.js';
import { VhostUserExport } from './frontend/vhost-user/export.js';
import type { NativeShim } from './native/index.js';
import { RpcServer } from './rpc/server.js';
import { VdpaOps } from './vdpa/ops.js';

export const DEFAULT_RPC_SOCKET = '/run/vdx/vdx.rpc.sock';

export class Daemon {
  private pool: ReactorPool | undefined;
  private readonly bdevs = new Map<string, BdevDesc>();
  private readonly vhostUser: VhostUserExport[] = [];
  private readonly vduse: VduseExport[] = [];
  private ops: VdpaOps | undefined;
  private rpc: RpcServer | undefined;

  constructor(
    private readonly native: NativeShim,
    private readonly config: DaemonConfig,
    private readonly log: Logger,
    /** null: no control socket */
    private readonly rpcSocket: string | null = DEFAULT_RPC_SOCKET,
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
      this.pool = new ReactorPool(this.native, this.config.reactors, this.config.idleSpinUs, this.config.cpus);
      for (const r of this.pool.reactors) {
        r.on('log', (level, msg, data) => this.log[level]({ component: 'reactor', reactor: r.index, ...data }, msg));
      }
      for (const x of this.config.exports) {
        const bdev = this.bdevs.get(x.bdev)!;
        if (x.type === 'vhost-user') {
          const e = new VhostUserExport(this.native, this.pool, bdev, x, this.log);
          e.start();
          this.vhostUser.push(e);
        } else {
          this.ops ??= new VdpaOps();
          const e = new VduseExport(this.native, this.pool, bdev, x, this.log, this.ops);
          this.vduse.push(e);
          await e.start();
        }
      }
      if (this.rpcSocket) {
        this.rpc = new RpcServer(this.rpcSocket, this.rpcMethods(), this.log);
        await this.rpc.start();
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  private rpcMethods() {
    const vduse = (name: unknown) => {
      const e = this.vduse.find((x) => x.name === name);
      if (!e) throw new Error(`no vduse export '${String(name)}'; vduse exports: ${this.vduse.map((x) => x.name).join(', ') || 'none'}`);
      return e;
    };
    return {
      exports: async () => [
        ...this.vhostUser.map((e) => ({ type: 'vhost-user', name: e.opts.name, bdev: e.bdevName, socket: e.opts.socket })),
        ...(await Promise.all(this.vduse.map((e) => e.info()))),
      ],
      vdpa_list: async () => Promise.all(this.vduse.map((e) => e.info())),
      vdpa_bind: async (p: Record<string, unknown>) => {
        if (p.bus !== 'virtio' && p.bus !== 'vhost') throw new Error(`bus must be virtio or vhost, not '${String(p.bus)}'`);
        return { node: await vduse(p.name).switchBus(p.bus) };
      },
      stats: async () => this.stats(),
      bdev_resize: async (p: Record<string, unknown>) => this.resize(String(p.name), p.size === undefined ? undefined : String(p.size)),
    };
  }

  /**
   * Grow or shrink a file bdev (to `size`, or to the file's current size when the
   * file was resized outside vdx) and tell the drivers: VDUSE devices get a
   * config-change interrupt; vhost-user front-ends see it on their next GET_CONFIG
   * (notifying them needs the back-end request channel, which vdx does not offer).
   */
  async resize(name: string, size: string | undefined): Promise<{ sizeBytes: number }> {
    const d = this.bdevs.get(name);
    if (!d) throw new Error(`no bdev '${name}'; bdevs: ${[...this.bdevs.keys()].join(', ')}`);
    const sizeBytes = bdevModule(d.info.type).resize?.(d, size);
    if (sizeBytes === undefined) throw new Error(`bdev '${name}' (${d.info.type}) cannot be resized; file bdevs can`);
    await Promise.all(this.pool!.reactors.map((r) => r.setSize(name, sizeBytes)));
    for (const e of this.vduse) if (e.bdevName === name) e.device.setCapacity(d.info.sizeBytes - (d.info.sizeBytes % 512));
    this.log.info({ component: 'bdev', name, sizeBytes }, 'bdev resized');
    return { sizeBytes };
  }

  async stop(): Promise<void> {
    await this.rpc?.stop();
    this.rpc = undefined;
    for (const e of this.vhostUser.splice(0)) await e.stop();
    for (const e of this.vduse.splice(0)) {
      await e.stop().catch((err: Error) => this.log.error(`stopping ${e.name}: ${err.message}`));
    }
    await this.ops?.close();
    this.ops = undefined;
    await this.pool?.shutdown();
    this.pool = undefined;
    for (const d of this.bdevs.values()) bdevModule(d.info.type).destroy(d);
    this.bdevs.clear();
  }

  async stats(): Promise<unknown[]> {
    return this.pool ? Promise.all(this.pool.reactors.map((r) => r.stats())) : [];
  }
}
