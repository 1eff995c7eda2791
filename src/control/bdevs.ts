// The daemon's bdevs: one registry that the command line, the config file, the
// JSON-RPC methods and a restart all create through. Create is idempotent (an
// orchestrator retries: the same name with the same parameters returns the
// existing bdev); a bdev in use is claimed and cannot be deleted.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { bdevModule } from '../bdev/registry.js';
import type { BdevDesc, BdevModule } from '../bdev/types.js';
import { ControlError, EBUSY, EEXIST, ENODEV } from './errors.js';

/** A bdev as created: its type and the module's keys (values as strings). */
export interface BdevSpec {
  type: string;
  [key: string]: string;
}

export interface BdevEntry {
  readonly desc: BdevDesc;
  /** canonical spec (normalized by the module, uuid included): what save_config writes */
  readonly spec: BdevSpec;
  readonly uuid: string;
  /** who uses this bdev, e.g. "vhost controller vhost.0" */
  readonly claims: Set<string>;
  /** the SPDK-style method it was created with, kept so save_config writes it back the same way */
  readonly method: string | undefined;
  /** stops the module's watch on the store (size changes made elsewhere) */
  unwatch: (() => void) | undefined;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Split the registry's own keys (uuid) from the module's, and normalize the latter. */
export function normalizeBdevSpec(spec: BdevSpec): { spec: BdevSpec; uuid: string | undefined } {
  const { type, uuid, ...keys } = spec;
  if (uuid !== undefined && !UUID_RE.test(uuid)) throw new Error(`${type}: uuid=${uuid} is not a UUID (e.g. ${randomUUID()})`);
  return { spec: { type, ...bdevModule(type).normalize(keys) }, uuid: uuid?.toLowerCase() };
}

export class BdevRegistry {
  private readonly entries = new Map<string, BdevEntry>();
  /** creates still connecting (remote bdevs), by name: a second create of the name waits for the first */
  private readonly creating = new Map<string, Promise<unknown>>();
  private stopping = false;
  /** bdevs whose delete is closing them: listed still, but nothing may use, claim or delete them again */
  private readonly dying = new Set<string>();

  /** `changed` hears of a size change a module saw in its store (made outside vdx). */
  constructor(
    private readonly log: Logger,
    private readonly changed: (name: string) => void = () => {},
  ) {}

  /**
   * Create a bdev, or return the existing one when it has the same name and
   * parameters (`created` false). The same name with other parameters is an
   * error naming the difference.
   */
  async create(raw: BdevSpec, method?: string): Promise<{ entry: BdevEntry; created: boolean }> {
    const { spec, uuid } = normalizeBdevSpec(raw);
    const name = spec.name!;
    for (let p = this.creating.get(name); p; p = this.creating.get(name)) await p.catch(() => {});
    if (this.stopping) throw new ControlError(EBUSY, `vdx is shutting down; bdev '${name}' was not created`);
    const old = this.entries.get(name);
    if (old) {
      const diff = specDifference(old, spec, uuid);
      if (diff) throw new ControlError(EEXIST, `bdev '${name}' already exists with different parameters: ${diff}`);
      return { entry: old, created: false };
    }
    const { type, ...keys } = spec;
    const module = bdevModule(type);
    const making = Promise.resolve().then(() => module.create(keys));
    this.creating.set(name, making);
    let desc: BdevDesc;
    try {
      desc = await making;
    } catch (e) {
      // A store that refused or did not answer (an errno from the module) is the
      // caller's -errno; anything else is a bad parameter the module found.
      const errno = (e as { errno?: unknown }).errno;
      if (typeof errno === 'number' && errno !== 0) throw new ControlError(-Math.abs(errno), `bdev '${name}': ${(e as Error).message}`);
      throw e;
    } finally {
      this.creating.delete(name);
    }
    if (this.stopping) {
      await module.destroy(desc);
      throw new ControlError(EBUSY, `vdx is shutting down; bdev '${name}' was not created`);
    }
    const entry: BdevEntry = { desc, spec, uuid: uuid ?? randomUUID(), claims: new Set(), method, unwatch: undefined };
    entry.unwatch = this.watch(module, desc, name);
    this.entries.set(name, entry);
    this.log.info({ component: 'bdev', name, type, sizeBytes: desc.info.sizeBytes }, 'bdev created');
    return { entry, created: true };
  }

  get(name: string): BdevEntry {
    const e = this.entries.get(name);
    if (!e) throw new ControlError(ENODEV, `no bdev '${name}'; bdevs: ${[...this.entries.keys()].join(', ') || 'none'}`);
    if (this.dying.has(name)) throw new ControlError(EBUSY, `bdev '${name}' is being deleted`);
    return e;
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  list(): BdevEntry[] {
    return [...this.entries.values()];
  }

  claim(name: string, by: string): BdevEntry {
    const e = this.get(name);
    e.claims.add(by);
    return e;
  }

  release(name: string, by: string): void {
    this.entries.get(name)?.claims.delete(by);
  }

  /** Delete an unclaimed bdev; `type` guards against bdev_malloc_delete on a file bdev. */
  async delete(name: string, type?: string): Promise<void> {
    const e = this.get(name);
    if (type !== undefined && e.spec.type !== type) {
      throw new ControlError(ENODEV, `bdev '${name}' is a ${e.spec.type} bdev, not ${type}`);
    }
    if (e.claims.size) {
      throw new ControlError(EBUSY, `bdev '${name}' is claimed by ${[...e.claims].join(', ')}; delete ${e.claims.size > 1 ? 'those' : 'that'} first`);
    }
    // The entry goes only once its module let go: a close that fails (a store
    // still holding I/O) keeps the bdev, so a retry can finish the delete.
    // Creates of the name meanwhile wait for the outcome.
    const dying = destroyEntry(e);
    this.creating.set(name, dying);
    this.dying.add(name);
    try {
      await dying;
    } catch (err) {
      const module = bdevModule(e.spec.type);
      e.unwatch = this.watch(module, e.desc, name);
      throw new ControlError(EBUSY, `bdev '${name}' was not deleted: ${(err as Error).message}`);
    } finally {
      this.creating.delete(name);
      this.dying.delete(name);
    }
    this.entries.delete(name);
    this.log.info({ component: 'bdev', name }, 'bdev deleted');
  }

  private watch(module: BdevModule, desc: BdevDesc, name: string): (() => void) | undefined {
    return module.watch?.(
      desc,
      () => this.changed(name),
      (why) => this.log.warn({ component: 'bdev', name }, `size changes made outside vdx will go unnoticed: ${why}`),
    );
  }

  /** Record a new size in the spec (null bdevs keep their size there). */
  resized(name: string): void {
    const e = this.get(name);
    if ('size' in e.spec) e.spec.size = String(e.desc.info.sizeBytes);
  }

  /** Destroy everything (daemon shutdown, after every export has stopped); creates still connecting are undone. */
  async clear(): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.creating.values()].map((p) => p.catch(() => {})));
    const all = [...this.entries.values()];
    this.entries.clear();
    for (const e of all) {
      await destroyEntry(e).catch((err: Error) => this.log.error({ component: 'bdev', name: e.spec.name }, `destroying bdev: ${err.message}`));
    }
  }
}

async function destroyEntry(e: BdevEntry): Promise<void> {
  // Unwatch first: a late notification must not reach a bdev being torn down.
  e.unwatch?.();
  e.unwatch = undefined;
  await bdevModule(e.spec.type).destroy(e.desc);
}

function specDifference(old: BdevEntry, spec: BdevSpec, uuid: string | undefined): string | undefined {
  const diffs: string[] = [];
  for (const k of new Set([...Object.keys(old.spec), ...Object.keys(spec)])) {
    if (old.spec[k] !== spec[k]) diffs.push(`${k}=${old.spec[k] ?? '(none)'} (asked ${spec[k] ?? '(none)'})`);
  }
  if (uuid !== undefined && uuid !== old.uuid) diffs.push(`uuid=${old.uuid} (asked ${uuid})`);
  return diffs.length ? diffs.join(', ') : undefined;
}
