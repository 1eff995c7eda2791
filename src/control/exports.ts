// The daemon's exports (vhost-user controllers and VDUSE devices): created and
// deleted at run time through one registry, like the bdevs. An export claims
// its bdev; deleting one whose front-end is connected needs `force`, which
// stops the front-end cleanly. Operations run one at a time, so two callers
// racing to create the same name see one create and one "exists".
import type { Logger } from 'pino';
import type { ExportConfig as DaemonConfigExport, VduseExportConfig, VhostUserExportConfig } from '../config/config.js';
import type { QueueHost, QueuePlacer, ReactorHandle, ReactorPool } from '../core/reactor-pool.js';
import { VduseExport, type VduseExportInfo } from '../frontend/vduse/export.js';
import { VhostUserExport } from '../frontend/vhost-user/export.js';
import type { NativeShim } from '../native/index.js';
import { parseCpumask } from '../config/config.js';
import { nodeInUse, type VdpaBus } from '../vdpa/bus.js';
import { VdpaOps } from '../vdpa/ops.js';
import type { CounterRegistry } from '../metrics/counters.js';
import type { BdevDesc } from '../bdev/types.js';
import { type CoalescingSettings, coalescingProblem } from '../virtio/coalescing.js';
import type { BdevRegistry } from './bdevs.js';
import { ControlError, EBUSY, EEXIST, EINVAL, ENODEV } from './errors.js';

export type ExportEntry =
  | { kind: 'vhost-user'; cfg: VhostUserExportConfig; impl: VhostUserExport }
  | { kind: 'vduse'; cfg: VduseExportConfig; impl: VduseExport };

const KIND_NAME = { 'vhost-user': 'vhost controller', vduse: 'vduse device' } as const;

/** How an export names itself in its bdev's claims. */
function claimantOf(kind: ExportEntry['kind'], name: string): string {
  return `${KIND_NAME[kind]} ${name}`;
}

export class ExportRegistry {
  private readonly entries = new Map<string, ExportEntry>();
  private ops: VdpaOps | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** set by clear(): the daemon is stopping and takes no more changes */
  private closed = false;
  /** the one reactor serving each singleReactor bdev (see BdevInfo), while an export uses it */
  private readonly bdevReactor = new Map<string, QueueHost>();

  constructor(
    private readonly native: NativeShim,
    private readonly pool: ReactorPool,
    private readonly bdevs: BdevRegistry,
    private readonly log: Logger,
    /** I/O counters per export and queue; an export's series go when it is deleted */
    private readonly counters: CounterRegistry,
    /** VDUSE devices' records and in-flight logs (frontend/vduse/state.ts) */
    private readonly stateDir: string,
  ) {}

  /** Run control operations one at a time, in the order they were asked for. */
  private serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.queue.then(() => {
      if (this.closed) throw new ControlError(EBUSY, 'vdx is shutting down');
      return op();
    });
    this.queue = next.catch(() => {});
    return next;
  }

  get(name: string, kind?: ExportEntry['kind']): ExportEntry {
    const e = this.entries.get(name);
    if (!e || (kind && e.kind !== kind)) {
      const what = kind ? KIND_NAME[kind] : 'export';
      const names = this.list(kind).map((x) => x.cfg.name);
      throw new ControlError(ENODEV, `no ${what} '${name}'${e ? ` (it is a ${KIND_NAME[e.kind]})` : ''}; ${what}s: ${names.join(', ') || 'none'}`);
    }
    return e;
  }

  list(kind?: ExportEntry['kind']): ExportEntry[] {
    return [...this.entries.values()].filter((e) => !kind || e.kind === kind);
  }

  /** Create and start an export, or return the existing one with the same name and parameters. */
  create(cfg: DaemonConfigExport): Promise<{ entry: ExportEntry; created: boolean }> {
    return this.serial(async () => {
      const old = this.entries.get(cfg.name);
      if (old) {
        const diff = configDifference(old.cfg, cfg);
        if (diff) throw new ControlError(EEXIST, `${KIND_NAME[old.kind]} '${cfg.name}' already exists with different parameters: ${diff}`);
        return { entry: old, created: false };
      }
      const bdev = this.bdevs.get(cfg.bdev).desc;
      if (cfg.type === 'vhost-user') {
        const other = this.list('vhost-user').find((e) => e.cfg.type === 'vhost-user' && e.cfg.socket === cfg.socket);
        if (other) throw new ControlError(EEXIST, `socket ${cfg.socket} is already served by vhost controller '${other.cfg.name}'`);
      }
      let placer: QueuePlacer;
      try {
        const among = this.pool.select(cfg.cpumask === undefined ? undefined : parseCpumask(cfg.cpumask));
        placer = bdev.info.singleReactor ? this.singleReactorPlacer(cfg.bdev, among) : this.pool.placer(among);
      } catch (e) {
        throw new ControlError(EINVAL, `${KIND_NAME[cfg.type]} '${cfg.name}': ${(e as Error).message}`);
      }
      const claimant = claimantOf(cfg.type, cfg.name);
      this.bdevs.claim(cfg.bdev, claimant, cfg.readonly ? 'read' : 'write');
      let entry: ExportEntry;
      try {
        if (cfg.type === 'vhost-user') {
          const impl = new VhostUserExport(this.native, this.pool, placer, bdev, cfg, this.log, this.counters);
          await impl.start();
          entry = { kind: 'vhost-user', cfg, impl };
        } else {
          this.ops ??= new VdpaOps();
          const impl = new VduseExport(this.native, this.pool, placer, bdev, cfg, this.log, this.ops, this.counters, this.stateDir);
          await impl.start();
          entry = { kind: 'vduse', cfg: { ...cfg }, impl };
        }
      } catch (e) {
        this.bdevs.release(cfg.bdev, claimant);
        this.counters.forget(cfg.name);
        this.releaseReactor(cfg.bdev);
        throw e;
      }
      this.entries.set(cfg.name, entry);
      this.log.info({ component: 'export', name: cfg.name, type: cfg.type, bdev: cfg.bdev }, 'export created');
      return { entry, created: true };
    });
  }

  /**
   * Every queue of every export on a singleReactor bdev goes to one reactor:
   * the one already serving the bdev, or the least loaded the cpumask allows.
   */
  private singleReactorPlacer(bdev: string, among: ReactorHandle[]): QueuePlacer {
    // Layers on such a bdev (the parts of a split) share its one reactor.
    const root = singleReactorRoot(this.bdevs.get(bdev).desc);
    let r = this.bdevReactor.get(root.info.name);
    if (r && !among.some((x) => x === r)) {
      const via = root.info.name === bdev ? '' : ` (it is built on '${root.info.name}')`;
      throw new Error(`bdev '${bdev}' must stay on one reactor${via} (${singleReactorWhy(root.info.type)}) and reactor ${r.index} serves it; use a cpumask that includes that reactor`);
    }
    r ??= this.pool.placer(among).pick();
    this.bdevReactor.set(root.info.name, r);
    const chosen = r;
    return { pick: () => chosen };
  }

  /** Forget a singleReactor bdev's reactor once no export uses the bdev. */
  private releaseReactor(bdev: string): void {
    const rootOf = (name: string) => {
      const e = this.bdevs.list().find((x) => x.desc.info.name === name);
      return e ? singleReactorRoot(e.desc).info.name : name;
    };
    const root = rootOf(bdev);
    if (![...this.entries.values()].some((e) => rootOf(e.cfg.bdev) === root)) this.bdevReactor.delete(root);
  }

  /** Why this export's front-end must not be cut off now, or undefined. */
  private async inUse(e: ExportEntry): Promise<string | undefined> {
    if (e.kind === 'vhost-user') return e.impl.connected ? 'a front-end is connected' : undefined;
    const st = await this.vdpaState(e);
    return st.node ? nodeInUse(st.node) : undefined;
  }

  /** Stop and remove an export. One in use is refused unless `force`. */
  delete(name: string, kind: ExportEntry['kind'] | undefined, force: boolean): Promise<void> {
    return this.serial(async () => {
      const e = this.get(name, kind);
      const busy = await this.inUse(e);
      if (busy && !force) {
        throw new ControlError(EBUSY, `${KIND_NAME[e.kind]} '${name}' is in use (${busy}); stop the front-end first, or delete with force`);
      }
      if (busy) this.log.warn({ component: 'export', name, why: busy }, 'deleting an export in use (force)');
      await e.impl.stop();
      this.entries.delete(name);
      this.counters.forget(name);
      this.bdevs.release(e.cfg.bdev, claimantOf(e.kind, name));
      this.releaseReactor(e.cfg.bdev);
      this.log.info({ component: 'export', name }, 'export deleted');
    });
  }

  /** Where a VDUSE device is on the vDPA bus now. */
  async vdpaState(e: ExportEntry): Promise<VduseExportInfo> {
    if (e.kind !== 'vduse') throw new ControlError(EINVAL, `'${e.cfg.name}' is not a vduse device`);
    return e.impl.info();
  }

  /** Move a VDUSE device to another bus; the saved config then records the new bus. */
  bind(name: string, bus: VdpaBus): Promise<string> {
    return this.serial(async () => {
      const e = this.get(name, 'vduse') as ExportEntry & { kind: 'vduse' };
      const node = await e.impl.switchBus(bus);
      e.cfg.bus = bus;
      return node;
    });
  }

  /** Interrupt coalescing of an export, its running queues included; the saved config then records it. */
  setCoalescing(name: string, kind: ExportEntry['kind'], s: CoalescingSettings): Promise<void> {
    return this.serial(async () => {
      const e = this.get(name, kind);
      const problem = coalescingProblem(s);
      if (problem) throw new ControlError(EINVAL, `${KIND_NAME[e.kind]} '${name}': ${problem}`);
      e.impl.setCoalescing(s);
      e.cfg.delayBaseUs = s.delayBaseUs;
      e.cfg.iopsThreshold = s.iopsThreshold;
      this.log.info({ component: 'export', name, delayBaseUs: s.delayBaseUs, iopsThreshold: s.iopsThreshold }, 'interrupt coalescing set');
    });
  }

  /**
   * Stop everything (daemon shutdown). VDUSE devices are destroyed, or, with
   * `keep` ('all' for an upgrade, 'reattached' when a start failed), left in
   * place for the next vdx; vhost-user front-ends reconnect to it either way.
   */
  async clear(keep: 'none' | 'all' | 'reattached' = 'none'): Promise<void> {
    await this.serial(async () => {
      this.closed = true;
      const all = [...this.entries.values()];
      for (const e of all.filter((x) => x.kind === 'vhost-user')) await e.impl.stop();
      for (const e of all) {
        if (e.kind !== 'vduse') continue;
        const leave = keep === 'all' || (keep === 'reattached' && e.impl.reattached);
        await (leave ? e.impl.detach() : e.impl.stop()).catch((err: Error) => this.log.error(`stopping ${e.cfg.name}: ${err.message}`));
      }
      for (const e of all) this.bdevs.release(e.cfg.bdev, claimantOf(e.kind, e.cfg.name));
      this.entries.clear();
      this.bdevReactor.clear();
      await this.ops?.close();
      this.ops = undefined;
    });
  }
}

/** The bdev whose channels decide that this one's I/O stays on one reactor: the bottom of the layers that inherited it. */
function singleReactorRoot(desc: BdevDesc): BdevDesc {
  let d = desc;
  for (let b = d.bases?.find((x) => x.info.singleReactor); b; b = d.bases?.find((x) => x.info.singleReactor)) d = b;
  return d;
}

function singleReactorWhy(type: string): string {
  return type === 'nbd' ? 'its NBD server does not offer multi-conn, so a flush covers one connection only' : 'its channels are not coherent';
}

/**
 * Differences that make a create not a retry. The bus of a VDUSE device and
 * the interrupt coalescing of either kind are state, changed at run time, not
 * identity.
 */
const STATE_KEYS = new Set(['bus', 'delayBaseUs', 'iopsThreshold']);

function configDifference(a: DaemonConfigExport, b: DaemonConfigExport): string | undefined {
  const diffs: string[] = [];
  const ra = a as unknown as Record<string, unknown>;
  const rb = b as unknown as Record<string, unknown>;
  for (const k of new Set([...Object.keys(ra), ...Object.keys(rb)])) {
    if (STATE_KEYS.has(k)) continue;
    if (ra[k] !== rb[k]) diffs.push(`${k}=${String(ra[k])} (asked ${String(rb[k])})`);
  }
  return diffs.length ? diffs.join(', ') : undefined;
}
