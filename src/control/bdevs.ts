// The daemon's bdevs: one registry that the command line, the config file, the
// JSON-RPC methods and a restart all create through. Create is idempotent (an
// orchestrator retries: the same name with the same parameters returns the
// existing bdev); a bdev in use is claimed and cannot be deleted.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { QOS_BYTES, type QosLimit, setQosLimits } from '../bdev/qos.js';
import { bdevModule } from '../bdev/registry.js';
import type { BdevDesc, BdevModule } from '../bdev/types.js';
import { ControlError, EBUSY, EEXIST, ENODEV } from './errors.js';

/** A bdev as created: its type and the module's keys (values as strings). */
export interface BdevSpec {
  type: string;
  [key: string]: string;
}

/**
 * How a user holds a bdev: `read` (a read-only export) never conflicts;
 * `write` (a writable export) shares with other writers, as vhost exports of
 * one bdev always could; `exclusive` (a layer on it) tolerates no other writer.
 */
export type ClaimKind = 'read' | 'write' | 'exclusive';

export interface Claim {
  kind: ClaimKind;
  /** the parts of a split claim their base together, once each */
  count: number;
}

export interface BdevEntry {
  readonly desc: BdevDesc;
  /** canonical spec (normalized by the module, uuid included): what save_config writes */
  readonly spec: BdevSpec;
  readonly uuid: string;
  /** who uses this bdev, e.g. "vhost controller vhost.0", "split f0" */
  readonly claims: Map<string, Claim>;
  /** a layer's bases (claimed by `claimant` while this bdev exists) */
  readonly bases: string[];
  readonly claimant: string;
  /** bdevs made by one spec (split's parts): created and deleted together */
  readonly group: { label: string; deleteHint: string } | undefined;
  /** the SPDK-style method it was created with, kept so save_config writes it back the same way */
  readonly method: string | undefined;
  /** stops the module's watch on the store (size changes made elsewhere) */
  unwatch: (() => void) | undefined;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The QoS limits a spec may carry (the registry's, like uuid): spec key -> bdev_set_qos_limit's parameter. */
export const QOS_SPEC_KEYS: Record<string, QosLimit> = {
  'rw-ios-per-sec': 'rw_ios_per_sec',
  'rw-mbytes-per-sec': 'rw_mbytes_per_sec',
  'r-mbytes-per-sec': 'r_mbytes_per_sec',
  'w-mbytes-per-sec': 'w_mbytes_per_sec',
};

/** Split the registry's own keys (uuid, QoS limits) from the module's, and normalize the latter. */
export function normalizeBdevSpec(spec: BdevSpec): { spec: BdevSpec; uuid: string | undefined; qos: Partial<Record<QosLimit, number>> } {
  const { type, uuid, ...rest } = spec;
  if (uuid !== undefined && !UUID_RE.test(uuid)) throw new Error(`${type}: uuid=${uuid} is not a UUID (e.g. ${randomUUID()})`);
  const qos: Partial<Record<QosLimit, number>> = {};
  const keys: Record<string, string> = {};
  for (const [k, v] of Object.entries(rest)) {
    const limit = QOS_SPEC_KEYS[k];
    if (limit === undefined) {
      keys[k] = v;
      continue;
    }
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new Error(`${type}: ${k}=${v} must be a whole number (0: no limit)`);
    qos[limit] = Number(v);
  }
  return { spec: { type, ...bdevModule(type).normalize(keys) }, uuid: uuid?.toLowerCase(), qos };
}

export class BdevRegistry {
  private readonly entries = new Map<string, BdevEntry>();
  /** creates still connecting (remote bdevs), by name: a second create of the name waits for the first */
  private readonly creating = new Map<string, Promise<unknown>>();
  private stopping = false;
  /** bdevs whose delete is closing them: listed still, but nothing may use, claim or delete them again */
  private readonly dying = new Set<string>();

  /** `changed` hears of a size change a module saw in its store (made outside vdx); `made` of each bdev created. */
  constructor(
    private readonly log: Logger,
    private readonly changed: (name: string) => void = () => {},
    private readonly made: (entry: BdevEntry) => void = () => {},
  ) {}

  /**
   * Create a bdev, or return the existing one when it has the same name and
   * parameters (`created` false). The same name with other parameters is an
   * error naming the difference. A spec that stands for several bdevs (split)
   * creates them all (`entries`), or none.
   */
  async create(raw: BdevSpec, method?: string): Promise<{ entry: BdevEntry; created: boolean; entries: BdevEntry[] }> {
    const module = bdevModule(raw.type);
    if (!module.expand) {
      const r = await this.createOne(raw, method, undefined);
      return { ...r, entries: [r.entry] };
    }
    const { type, uuid, ...keys } = raw;
    if (uuid !== undefined) throw new Error(`${type}: uuid= is not taken here: each of its bdevs gets one of its own`);
    const bases = (module.baseKeys ?? []).map((k) => this.baseFor(type, k, keys[k]));
    const parts = module.expand(keys, bases.map((b) => b.desc));
    const baseName = bases[0]?.desc.info.name ?? '';
    const group = { label: `${type} ${baseName}`, deleteHint: `bdev_${type}_delete ${baseName}` };
    const entries: BdevEntry[] = [];
    const made: BdevEntry[] = [];
    try {
      for (const part of parts) {
        const r = await this.createOne({ type, ...part }, method, group);
        entries.push(r.entry);
        if (r.created) made.push(r.entry);
      }
    } catch (e) {
      // All or nothing: the parts this call made go again (those that existed stay).
      for (const x of made.reverse()) {
        await this.deleteEntry(x).catch((err: Error) => this.log.error({ component: 'bdev', name: x.desc.info.name }, `undoing ${group.label}: ${err.message}`));
      }
      throw e;
    }
    return { entry: entries[0]!, created: made.length > 0, entries };
  }

  /** A base a layer names: it must exist (and not be on its way out). */
  private baseFor(type: string, key: string, name: string | undefined): BdevEntry {
    if (!name) throw new Error(`${type}: missing ${key}= (the bdev it is built on)`);
    return this.get(name);
  }

  private async createOne(raw: BdevSpec, method: string | undefined, group: BdevEntry['group']): Promise<{ entry: BdevEntry; created: boolean }> {
    const { spec, uuid, qos } = normalizeBdevSpec(raw);
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
    const claimant = group?.label ?? `${type} ${name}`;
    const baseNames = module.baseNames ? module.baseNames(keys) : (module.baseKeys ?? []).map((k) => keys[k]!);
    const bases: BdevDesc[] = [];
    try {
      for (const b of baseNames) bases.push(this.claim(b, claimant, 'exclusive').desc);
    } catch (e) {
      for (const b of baseNames.slice(0, bases.length)) this.release(b, claimant);
      throw e;
    }
    const making = Promise.resolve().then(() => module.create(keys, bases));
    this.creating.set(name, making);
    let desc: BdevDesc;
    try {
      desc = await making;
    } catch (e) {
      for (const b of baseNames) this.release(b, claimant);
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
      for (const b of baseNames) this.release(b, claimant);
      throw new ControlError(EBUSY, `vdx is shutting down; bdev '${name}' was not created`);
    }
    desc.qos ??= new SharedArrayBuffer(QOS_BYTES);
    if (Object.keys(qos).length) setQosLimits(desc.qos, qos);
    const entry: BdevEntry = { desc, spec, uuid: uuid ?? randomUUID(), claims: new Map(), bases: baseNames, claimant, group, method, unwatch: undefined };
    entry.unwatch = this.watch(module, desc, name);
    this.entries.set(name, entry);
    this.log.info({ component: 'bdev', name, type, sizeBytes: desc.info.sizeBytes, ...(baseNames.length ? { bases: baseNames } : {}) }, 'bdev created');
    this.made(entry);
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

  /**
   * Hold a bdev for `by`. A layer's claim (exclusive) is refused while anyone
   * else writes to the bdev, and a writer is refused while a layer holds it:
   * two writers that do not know of each other would corrupt it.
   */
  claim(name: string, by: string, kind: ClaimKind = 'write'): BdevEntry {
    const e = this.get(name);
    for (const [who, c] of e.claims) {
      if (who === by) continue;
      if (kind === 'exclusive' && c.kind !== 'read') {
        throw new ControlError(EBUSY, `bdev '${name}' is written through ${who}; a layer needs to be its only writer (delete ${who} first)`);
      }
      if (kind !== 'read' && c.kind === 'exclusive') {
        throw new ControlError(EBUSY, `bdev '${name}' is claimed for writing by ${who}; use that, or export '${name}' with readonly=on`);
      }
    }
    const held = e.claims.get(by);
    if (held) held.count++;
    else e.claims.set(by, { kind, count: 1 });
    return e;
  }

  release(name: string, by: string): void {
    const e = this.entries.get(name);
    const held = e?.claims.get(by);
    if (!held) return;
    if (--held.count === 0) e!.claims.delete(by);
  }

  /** Delete an unclaimed bdev; `type` guards against bdev_malloc_delete on a file bdev. */
  async delete(name: string, type?: string): Promise<void> {
    const e = this.get(name);
    if (type !== undefined && e.spec.type !== type) {
      throw new ControlError(ENODEV, `bdev '${name}' is a ${e.spec.type} bdev, not ${type}`);
    }
    if (e.group) throw new ControlError(EBUSY, `bdev '${name}' is one of the bdevs of ${e.group.label}, deleted together: ${e.group.deleteHint}`);
    await this.deleteEntry(e);
  }

  /** Delete every bdev one spec made (split's parts), if none of them is in use. */
  async deleteGroup(label: string): Promise<void> {
    const members = [...this.entries.values()].filter((e) => e.group?.label === label);
    if (!members.length) throw new ControlError(ENODEV, `no ${label}`);
    const used = members.filter((e) => e.claims.size > 0);
    if (used.length) {
      throw new ControlError(EBUSY, `${label} is in use: ${used.map((e) => `${e.desc.info.name} by ${[...e.claims.keys()].join(', ')}`).join('; ')}; delete those first`);
    }
    // Held while the parts go, so nothing claims one in between (claim() goes through get()).
    for (const e of members) this.dying.add(e.desc.info.name);
    try {
      for (const e of members.reverse()) {
        this.dying.delete(e.desc.info.name);
        await this.deleteEntry(e);
      }
    } finally {
      for (const e of members) if (this.entries.has(e.desc.info.name)) this.dying.delete(e.desc.info.name);
    }
  }

  private async deleteEntry(e: BdevEntry): Promise<void> {
    const name = e.desc.info.name;
    if (this.dying.has(name)) throw new ControlError(EBUSY, `bdev '${name}' is being deleted`);
    if (e.claims.size) {
      throw new ControlError(EBUSY, `bdev '${name}' is claimed by ${[...e.claims.keys()].join(', ')}; delete ${e.claims.size > 1 ? 'those' : 'that'} first`);
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
    for (const b of e.bases) this.release(b, e.claimant);
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
    // Newest first: a layer goes before the bdevs it is built on.
    const all = [...this.entries.values()].reverse();
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
