// The running vdx, and the composition root of its control plane: reactors,
// the bdev and export registries, and the JSON-RPC socket over them. The
// command line, the config file and RPC all create through the registries.
import type { Logger } from 'pino';
import { BDEV_MODULES, bdevModule } from './bdev/registry.js';
import type { DaemonConfig } from './config/config.js';
import { validateConfig } from './config/config.js';
import { checkSavedConfig, type SavedConfig } from './config/saved.js';
import { BdevRegistry } from './control/bdevs.js';
import { ControlError, EBUSY, EINVAL } from './control/errors.js';
import { ExportRegistry } from './control/exports.js';
import { RbdClusterRegistry } from './control/rbd-clusters.js';
import { ReactorPool } from './core/reactor-pool.js';
import type { NativeShim } from './native/index.js';
import { RpcDispatcher } from './rpc/dispatch.js';
import type { MethodTable } from './rpc/method.js';
import type { ReactorSettings, RpcContext } from './rpc/methods/context.js';
import { METHODS } from './rpc/methods/index.js';
import { RpcServer } from './rpc/server.js';
import { SUBSYSTEMS, subsystemConfig } from './rpc/methods/framework.js';
import { RunningState } from './running-state.js';
import { RaidStates } from './control/raid-state.js';
import { CounterRegistry } from './metrics/counters.js';
import { renderPrometheus } from './metrics/prometheus.js';
import { type MetricsServer, startMetricsServer } from './metrics/server.js';

import { ConfigError, DEFAULT_RPC_SOCKET, DEFAULT_STATE_DIR, DEFAULT_VHOST_SOCKET_DIR, type DaemonOptions } from './daemon-options.js';

type ConfigEntryText = { method: string; params?: Record<string, unknown> };

/** "cluster:NAME", "bdev:NAME" or "export:NAME" for a config entry that makes one; undefined for others. */
function entryKey(c: ConfigEntryText): string | undefined {
  // A split is known by its first part.
  if (c.method === 'bdev_split_create' && typeof c.params?.['base_bdev'] === 'string') return `bdev:${c.params['base_bdev']}p0`;
  // An error bdev is named after its base.
  if (c.method === 'bdev_error_create' && typeof c.params?.['base_name'] === 'string') return `bdev:EE_${c.params['base_name']}`;
  const name = c.params?.['ctrlr'] ?? c.params?.['name'];
  // Coalescing set on an export goes with the export: one the command line makes takes its settings from there.
  if (typeof name === 'string' && /_set_coalescing$/.test(c.method)) return `export:${name}`;
  if (typeof name !== 'string' || !/_create|_register_cluster$/.test(c.method)) return undefined;
  if (c.method === 'bdev_rbd_register_cluster') return `cluster:${name}`;
  return c.method.startsWith('bdev_') ? `bdev:${name}` : `export:${name}`;
}

function resizableTypes(): string[] {
  return Object.values(BDEV_MODULES).filter((m) => m.resize).map((m) => m.type);
}

export class Daemon implements RpcContext {
  private poolRef: ReactorPool | undefined;
  private bdevsRef: BdevRegistry | undefined;
  private exportsRef: ExportRegistry | undefined;
  /** Ceph clusters named over RPC (bdev_rbd_register_cluster); save_config writes them with the bdevs */
  readonly rbdClusters = new RbdClusterRegistry();
  private rpc: RpcServer | undefined;
  private metricsServer: MetricsServer | undefined;
  /** I/O counters of every export's queues, written by the reactors */
  readonly counters = new CounterRegistry();
  readonly methods: MethodTable<RpcContext> = METHODS;
  readonly reactors: ReactorSettings;
  readonly vhostSocketDir: string;
  /** VDUSE devices' records and in-flight logs, and the running state */
  private readonly stateDir: string;
  /** which mirror members are out of step, kept for the next vdx */
  private readonly raidStates: RaidStates;
  /** what RPC calls made, for the next vdx on this socket (none without a socket) */
  private readonly running: RunningState | undefined;
  /** "kind:name" of what the command line made: it makes them again itself, so they are not kept */
  private declared = new Set<string>();

  constructor(
    private readonly native: NativeShim,
    private readonly config: DaemonConfig,
    private readonly log: Logger,
    private readonly opts: DaemonOptions = { rpcSocket: DEFAULT_RPC_SOCKET, vhostSocketDir: DEFAULT_VHOST_SOCKET_DIR },
  ) {
    validateConfig(config);
    if (config.saved) checkSavedConfig(config.saved.where, config.saved.doc);
    this.reactors = { count: config.reactors, cpus: config.cpus, idleSpinUs: config.idleSpinUs };
    this.vhostSocketDir = opts.vhostSocketDir;
    this.stateDir = opts.stateDir ?? DEFAULT_STATE_DIR;
    this.raidStates = new RaidStates(this.stateDir, this.log);
    this.running = opts.rpcSocket ? new RunningState(this.stateDir, opts.rpcSocket) : undefined;
  }

  get pool(): ReactorPool {
    if (!this.poolRef) throw new Error('the daemon is not running');
    return this.poolRef;
  }
  get bdevs(): BdevRegistry {
    if (!this.bdevsRef) throw new Error('the daemon is not running');
    return this.bdevsRef;
  }
  get exports(): ExportRegistry {
    if (!this.exportsRef) throw new Error('the daemon is not running');
    return this.exportsRef;
  }

  async start(): Promise<void> {
    try {
      const pool = this.opts.pool ?? new ReactorPool(this.native, this.config.reactors, this.config.idleSpinUs, this.config.cpus);
      this.poolRef = pool;
      for (const r of pool.reactors) {
        r.on('log', (level, msg, data) => this.log[level]({ component: 'reactor', reactor: r.index, ...data }, msg));
      }
      this.bdevsRef = new BdevRegistry(this.log, (name) => this.storeResized(name), (e) => this.raidStates.restore(e));
      this.raidStates.start(() => this.bdevsRef?.list() ?? []);
      this.exportsRef = new ExportRegistry(this.native, pool, this.bdevsRef, this.log, this.counters, this.stateDir);
      if (this.config.saved) await this.replay(this.config.saved.where, this.config.saved.doc);
      for (const b of this.config.bdevs) await this.bdevs.create(b);
      for (const x of this.config.exports) await this.exports.create(x);
      // What exists now is the command line's (and --config's); the running state keeps the rest,
      // and restoring it skips what the command line made.
      this.declared = new Set([
        ...this.rbdClusters.list().map((c) => `cluster:${c.name}`),
        ...this.bdevs.list().map((b) => `bdev:${b.desc.info.name}`),
        ...this.exports.list().map((e) => `export:${e.cfg.name}`),
      ]);
      const left = this.running?.load();
      if (left) await this.restore(this.running!.path, left);
      this.saveRunning();
      if (this.opts.metrics) {
        this.metricsServer = await startMetricsServer(this.opts.metrics, () => this.renderMetrics(), this.log);
      }
      if (this.opts.rpcSocket) {
        const dispatcher = new RpcDispatcher<unknown>(this.methods as MethodTable<unknown>, this, this.log, () => this.saveRunning());
        this.rpc = new RpcServer(this.opts.rpcSocket, dispatcher, this.log);
        await this.rpc.start();
      }
    } catch (e) {
      // Devices taken over from a previous vdx stay: the next start may get further.
      await this.stop('reattached');
      throw e;
    }
  }

  /**
   * Bring back what RPC calls had made of the vdx that ran on this socket
   * before (running-state.ts). The command line comes first and wins: an
   * entry whose name it already made is skipped. The first failure names the
   * file and its entry.
   */
  private async restore(where: string, doc: SavedConfig): Promise<void> {
    const restored = await this.replay(where, doc, {
      skip: (c) => c.method === 'bdev_wait_for_examine' || this.declared.has(entryKey(c) ?? ''),
      noMethod: '; remove the file to start from the command line alone',
      fail: (msg) => new Error(msg),
    });
    if (restored) this.log.info({ file: where, restored }, 'restored what RPC calls had made before this vdx started');
  }

  /** Keep the running-state file up to date (after start and after every RPC call that succeeded). */
  private saveRunning(): void {
    if (!this.running || !this.bdevsRef || !this.exportsRef) return;
    try {
      const keep = (c: ConfigEntryText) => {
        const key = entryKey(c);
        return key === undefined || !this.declared.has(key);
      };
      const doc: SavedConfig = {
        subsystems: SUBSYSTEMS.filter((s) => s.subsystem !== 'reactor').map((s) => ({ subsystem: s.subsystem, config: subsystemConfig(this, s.subsystem).filter(keep) })),
      };
      this.running.save(doc);
    } catch (e) {
      this.log.warn(`${this.running.path}: ${(e as Error).message}; a restarted vdx will not restore RPC-made bdevs and exports`);
    }
  }

  /**
   * Replay a saved configuration through the RPC methods, in order, but for
   * the entries `skip` names; the first failure names its entry. Returns how
   * many entries ran.
   */
  private async replay(
    where: string,
    doc: SavedConfig,
    o: { skip?: (c: ConfigEntryText) => boolean; noMethod: string; fail: (msg: string) => Error } = {
      noMethod: ' (rpc_get_methods lists them)',
      fail: (msg) => new ConfigError(msg),
    },
  ): Promise<number> {
    let ran = 0;
    for (const s of doc.subsystems) {
      for (const [i, c] of (s.config ?? []).entries()) {
        // Applied before the reactors started, merged with the command line (which wins).
        if (c.method === 'framework_set_reactors' || o.skip?.(c)) continue;
        const m = Object.hasOwn(this.methods, c.method) ? this.methods[c.method] : undefined;
        const at = `${where}: subsystem ${s.subsystem}, config[${i}] (${c.method})`;
        if (!m) throw o.fail(`${at}: vdx has no such method${o.noMethod}`);
        try {
          await m.call(c.params ?? {}, this, c.method);
        } catch (e) {
          throw o.fail(`${at}: ${(e as Error).message}`);
        }
        ran++;
      }
    }
    return ran;
  }

  /**
   * Change a bdev's capacity (to `size`, or re-read a file's size after it was
   * resized outside vdx) and tell the drivers: VDUSE devices get a
   * config-change interrupt; vhost-user front-ends that gave vdx a back-end
   * request channel (QEMU does) get CONFIG_CHANGE_MSG, others see it on their
   * next GET_CONFIG.
   */
  async resizeBdev(name: string, size: string | undefined, onlyIfChanged = false): Promise<number> {
    const e = this.bdevs.get(name);
    const m = bdevModule(e.spec.type);
    if (!m.resize) throw new ControlError(EINVAL, `bdev '${name}' (${e.spec.type}) cannot be resized; ${resizableTypes().join(', ')} bdevs can`);
    const layers = [...e.claims].filter(([, c]) => c.kind === 'exclusive').map(([who]) => who);
    if (layers.length) throw new ControlError(EBUSY, `bdev '${name}' is under ${layers.join(', ')}, whose size was fixed when it was made; resize what the guest uses, or delete the layer first`);
    const before = e.desc.info.sizeBytes;
    let sizeBytes: number;
    try {
      sizeBytes = await m.resize(e.desc, size);
    } catch (err) {
      throw new ControlError(EINVAL, (err as Error).message);
    }
    if (onlyIfChanged && sizeBytes === before) {
      // The store's second word on a size vdx already passed on: say it once more to
      // VDUSE drivers. CI twice saw /dev/vdX keep its old capacity after one config
      // interrupt (vdx had sent it; the cause is not pinned down); a repeat is harmless.
      for (const x of this.exports.list()) {
        if (x.cfg.bdev !== name || x.kind !== 'vduse') continue;
        try {
          x.impl.device.announceConfig();
        } catch {
          // not started (no DRIVER_OK), or on vhost_vdpa: nothing is owed a repeat
        }
      }
      return sizeBytes;
    }
    this.bdevs.resized(name);
    await Promise.all(this.pool.reactors.map((r) => r.setSize(name, sizeBytes)));
    for (const x of this.exports.list()) {
      if (x.cfg.bdev !== name) continue;
      if (x.kind === 'vduse') x.impl.device.setCapacity(sizeBytes - (sizeBytes % 512));
      else x.impl.resized(e.desc);
    }
    this.log.info({ component: 'bdev', name, sizeBytes }, 'bdev resized');
    return sizeBytes;
  }

  /**
   * A bdev's store says its size may have changed (an `rbd resize` elsewhere):
   * re-read it and tell the exports, if it did.
   */
  private storeResized(name: string): void {
    if (!this.bdevsRef?.has(name)) return;
    this.resizeBdev(name, undefined, true).catch((e: Error) => this.log.error({ component: 'bdev', name }, `size change not applied: ${e.message}`));
  }

  /** The Prometheus text of every queue's and reactor's counters. */
  renderMetrics(): string {
    return renderPrometheus({ queues: this.counters.snapshot(), reactors: this.pool.reactorCounters() });
  }

  /**
   * Stop serving. VDUSE devices are destroyed, or with `keep` left in place
   * for the next vdx to re-attach ('all': an upgrade, after in-flight I/O
   * drained; 'reattached': only those this process took over).
   */
  async stop(keep: 'none' | 'all' | 'reattached' = 'none'): Promise<void> {
    await this.rpc?.stop();
    this.rpc = undefined;
    await this.metricsServer?.close();
    this.metricsServer = undefined;
    await this.exportsRef?.clear(keep);
    // Everything went: the next vdx starts from its command line alone. (Removed
    // only now: a kill during the stop leaves what is left to be taken back.)
    if (keep === 'none') this.running?.remove();
    this.exportsRef = undefined;
    await this.poolRef?.shutdown();
    this.poolRef = undefined;
    // The mirrors' last member states (a member may have failed while the queues drained), before their bdevs go.
    this.raidStates.stop(this.bdevsRef?.list() ?? []);
    await this.bdevsRef?.clear();
    this.bdevsRef = undefined;
  }
}
