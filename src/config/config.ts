// vdx configuration: bdevs and exports, from `type:key=value,...` specs (the form
// QEMU users know) or a JSON file. Errors name the bad key and what would be right.
import { readFileSync } from 'node:fs';
import { dirname, resolve as resolvePath } from 'node:path';
import { BDEV_MODULES, bdevModule, resolveModulePath } from '../bdev/registry.js';
import { checkKeys, parseBool } from '../bdev/spec.js';
import { isSavedConfig, savedReactors, type SavedConfig } from './saved.js';
import { cpumaskHex, parseCpumask } from './cpumask.js';
import { DEFAULT_DELAY_BASE_US, DEFAULT_IOPS_THRESHOLD, MAX_DELAY_BASE_US, MIN_IOPS_THRESHOLD } from '../virtio/coalescing.js';

export { cpumaskHex, parseCpumask };

export interface BdevConfig {
  type: string;
  /** module keys, values as strings (name, size, path, ...) */
  [key: string]: string;
}

export interface VhostUserExportConfig {
  type: 'vhost-user';
  name: string;
  bdev: string;
  socket: string;
  numQueues: number;
  queueSize: number;
  serial: string;
  readonly: boolean;
  mode: number;
  logicalBlockSize: number | undefined;
  /** offer VIRTIO_F_RING_PACKED (the front-end chooses) */
  packed: boolean;
  /** CPUs whose reactors may serve this export's queues, as a hex mask; undefined: all */
  cpumask: string | undefined;
  /** interrupt coalescing (virtio/coalescing.ts): base delay, 0 = off, and the IOPS above which it applies */
  delayBaseUs: number;
  iopsThreshold: number;
}

export interface VduseExportConfig {
  type: 'vduse';
  /** the VDUSE / vdpa device name (/dev/vduse/NAME) */
  name: string;
  bdev: string;
  numQueues: number;
  queueSize: number;
  logicalBlockSize: number | undefined;
  serial: string;
  readonly: boolean;
  bus: 'virtio' | 'vhost' | 'none';
  /** offer VIRTIO_F_RING_PACKED */
  packed: boolean;
  /** seconds the kernel waits for an answer to a control message before it breaks the device (0: forever); undefined: the kernel's (30) */
  msgTimeout: number | undefined;
  /** CPUs whose reactors may serve this export's queues, as a hex mask; undefined: all */
  cpumask: string | undefined;
  /** interrupt coalescing (virtio/coalescing.ts): base delay, 0 = off, and the IOPS above which it applies */
  delayBaseUs: number;
  iopsThreshold: number;
}

export type ExportConfig = VhostUserExportConfig | VduseExportConfig;

export interface DaemonConfig {
  reactors: number;
  /** CPUs the reactors are pinned to, one each in turn; empty: not pinned */
  cpus: number[];
  /** polling window after the last work before a reactor sleeps */
  idleSpinUs: number;
  bdevs: BdevConfig[];
  exports: ExportConfig[];
  /** a saved configuration (SPDK's format) replayed before bdevs and exports */
  saved?: { where: string; doc: SavedConfig };
}

/** Keys every bdev type takes: kept by the registry, not the module. */
export const COMMON_BDEV_KEYS: Record<string, string> = {
  uuid: 'the bdev\'s UUID, as bdev_get_bdevs shows it (default: a random one)',
  'rw-ios-per-sec': 'QoS: I/O per second, reads and writes (bdev_set_qos_limit; default 0, no limit)',
  'rw-mbytes-per-sec': 'QoS: MiB per second, reads and writes (default 0)',
  'r-mbytes-per-sec': 'QoS: MiB per second of reads (default 0)',
  'w-mbytes-per-sec': 'QoS: MiB per second of writes (default 0)',
};

export const EXPORT_KEYS: Record<string, Record<string, string>> = {
  'vhost-user': {
    bdev: 'name of the bdev to export (required)',
    socket: 'unix socket path QEMU connects to (required)',
    name: 'export name in logs (default: the bdev name)',
    'num-queues': 'virtqueues offered, 1..64 (default 1)',
    'queue-size': 'largest virtqueue the front-end will use, bounds seg_max (default 128, QEMU\'s default)',
    serial: 'serial number the guest reads (GET_ID), up to 20 ASCII characters (default: the bdev name)',
    readonly: 'on: guest writes fail, VIRTIO_BLK_F_RO is offered (default off)',
    mode: 'socket file mode, octal (default 0600)',
    'logical-block-size': 'block size the guest sees: 512 or 4096 (default: the bdev\'s)',
    packed: 'off: do not offer packed virtqueues (default on: QEMU uses them with packed=on)',
    cpumask: 'reactors that may serve the queues: those on these CPUs, a hex mask or a list (default: all)',
    'delay-base-us': `interrupt coalescing, as SPDK's vhost_controller_set_coalescing: above iops-threshold a queue interrupts at most once per delay-base-us x (IOPS - threshold) / threshold, 0..${MAX_DELAY_BASE_US} (default 0: off)`,
    'iops-threshold': `the IOPS per queue above which interrupts are coalesced, at least ${MIN_IOPS_THRESHOLD} (default ${DEFAULT_IOPS_THRESHOLD})`,
  },
  vduse: {
    bdev: 'name of the bdev to export (required)',
    name: 'VDUSE and vdpa device name, /dev/vduse/NAME (default: the bdev name)',
    'num-queues': 'virtqueues, 1..64 (default 1)',
    'queue-size': 'largest virtqueue, a power of two 2..32768 (default 1024, which QEMU vhost-vdpa-device-pci asks for)',
    'logical-block-size': 'block size the guest sees: 512 or 4096 (default: the bdev\'s)',
    serial: 'serial number the guest reads (GET_ID), up to 20 ASCII characters (default: the bdev name)',
    readonly: 'on: guest writes fail, VIRTIO_BLK_F_RO is offered (default off)',
    bus: 'virtio: /dev/vdX on this host; vhost: /dev/vhost-vdpa-N for VMs and libblkio; none: only /dev/vduse/NAME (default virtio)',
    packed: 'on: offer packed virtqueues (VIRTIO_F_RING_PACKED); drivers that know them use them (default off)',
    'msg-timeout': 'seconds the kernel waits for vdx to answer a control message (a reset, a bus switch, a VM starting) before it breaks the device for good, 0 = forever; set it above the time a restart of vdx takes (default: the kernel\'s, 30)',
    cpumask: 'reactors that may serve the queues: those on these CPUs, a hex mask or a list (default: all)',
    'delay-base-us': `interrupt coalescing, as SPDK's vhost_controller_set_coalescing: above iops-threshold a queue interrupts at most once per delay-base-us x (IOPS - threshold) / threshold, 0..${MAX_DELAY_BASE_US} (default 0: off)`,
    'iops-threshold': `the IOPS per queue above which interrupts are coalesced, at least ${MIN_IOPS_THRESHOLD} (default ${DEFAULT_IOPS_THRESHOLD})`,
  },
};

/** Split "type:k=v,k=v" into its type and keys; ",," is a literal comma (as in QEMU). */
export function parseSpec(what: string, spec: string): { type: string; keys: Record<string, string> } {
  const colon = spec.indexOf(':');
  const type = colon < 0 ? spec : spec.slice(0, colon);
  const rest = colon < 0 ? '' : spec.slice(colon + 1);
  if (!/^[a-z][a-z0-9-]*$/.test(type)) throw new Error(`${what} '${spec}': expected TYPE:key=value,... (e.g. malloc:name=m0,size=1G)`);
  const keys: Record<string, string> = {};
  if (rest === '') return { type, keys };
  for (const part of rest.replace(/,,/g, '\0').split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`${what} '${spec}': '${part.replace(/\0/g, ',')}' is not key=value`);
    const k = part.slice(0, eq);
    if (k in keys) throw new Error(`${what} '${spec}': key '${k}' given twice`);
    keys[k] = part.slice(eq + 1).replace(/\0/g, ',');
  }
  return { type, keys };
}

function intKey(type: string, key: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new Error(`${type}: ${key}=${v} must be an integer in ${min}..${max}`);
  return Number(v);
}

export function bdevFromSpec(spec: string): BdevConfig {
  const { type, keys } = parseSpec('--bdev', spec);
  if (!Object.hasOwn(BDEV_MODULES, type)) throw new Error(`--bdev '${spec}': unknown type '${type}'; known types: ${Object.keys(BDEV_MODULES).join(', ')}`);
  const module = bdevModule(type);
  // A spec for several bdevs (split) names them itself, and takes no uuid.
  const bases = [...(module.baseKeys ?? [])];
  if (module.names) {
    checkKeys(type, keys, module.keys, bases);
    module.names(keys);
  } else {
    checkKeys(type, keys, { ...module.keys, ...COMMON_BDEV_KEYS }, ['name', ...bases]);
  }
  return { type, ...keys };
}

/** The bdevs a spec makes, by name. */
export function bdevNames(b: BdevConfig): string[] {
  const module = bdevModule(b.type);
  return module.names ? module.names(b) : [b.name!];
}

function logicalBlockSize(type: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (v !== '512' && v !== '4096') throw new Error(`${type}: logical-block-size=${v} must be 512 or 4096`);
  return Number(v);
}

export function exportFromKeys(type: string, keys: Record<string, string>): ExportConfig {
  const known = Object.hasOwn(EXPORT_KEYS, type) ? EXPORT_KEYS[type] : undefined;
  if (!known) throw new Error(`unknown export type '${type}'; known types: ${Object.keys(EXPORT_KEYS).join(', ')}`);
  checkKeys(type, keys, known, type === 'vduse' ? ['bdev'] : ['bdev', 'socket']);
  const serial = keys.serial ?? keys.bdev!;
  if (!/^[\x20-\x7e]{0,20}$/.test(serial)) throw new Error(`${type}: serial=${serial} must be at most 20 printable ASCII characters`);
  if (type === 'vduse') {
    const name = keys.name ?? keys.bdev!;
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(name)) throw new Error(`vduse: name=${name} must be 1-64 letters, digits, '.', '_' or '-'`);
    const queueSize = intKey(type, 'queue-size', keys['queue-size'], 1024, 2, 32768);
    if ((queueSize & (queueSize - 1)) !== 0) throw new Error(`vduse: queue-size=${queueSize} must be a power of two`);
    const bus = keys.bus ?? 'virtio';
    if (bus !== 'virtio' && bus !== 'vhost' && bus !== 'none') throw new Error(`vduse: bus=${bus} must be virtio, vhost or none`);
    return {
      type: 'vduse',
      name,
      bdev: keys.bdev!,
      numQueues: intKey(type, 'num-queues', keys['num-queues'], 1, 1, 64),
      queueSize,
      logicalBlockSize: logicalBlockSize(type, keys['logical-block-size']),
      serial,
      readonly: parseBool('readonly', keys.readonly, false),
      bus,
      packed: parseBool('packed', keys.packed, false),
      msgTimeout: keys['msg-timeout'] === undefined ? undefined : intKey(type, 'msg-timeout', keys['msg-timeout'], 0, 0, 86_400),
      cpumask: cpumaskKey(type, keys.cpumask),
      ...coalescingKeys(type, keys),
    };
  }
  const mode = keys.mode ?? '0600';
  if (!/^0?[0-7]{3}$/.test(mode)) throw new Error(`${type}: mode=${mode} must be an octal file mode such as 0600`);
  return {
    type: 'vhost-user',
    name: keys.name ?? keys.bdev!,
    bdev: keys.bdev!,
    socket: keys.socket!,
    numQueues: intKey(type, 'num-queues', keys['num-queues'], 1, 1, 64),
    queueSize: intKey(type, 'queue-size', keys['queue-size'], 128, 4, 32768),
    serial,
    readonly: parseBool('readonly', keys.readonly, false),
    mode: parseInt(mode, 8),
    logicalBlockSize: logicalBlockSize(type, keys['logical-block-size']),
    packed: parseBool('packed', keys.packed, true),
    cpumask: cpumaskKey(type, keys.cpumask),
    ...coalescingKeys(type, keys),
  };
}

function coalescingKeys(type: string, keys: Record<string, string>): { delayBaseUs: number; iopsThreshold: number } {
  return {
    delayBaseUs: intKey(type, 'delay-base-us', keys['delay-base-us'], DEFAULT_DELAY_BASE_US, 0, MAX_DELAY_BASE_US),
    iopsThreshold: intKey(type, 'iops-threshold', keys['iops-threshold'], DEFAULT_IOPS_THRESHOLD, MIN_IOPS_THRESHOLD, 0xffff_ffff),
  };
}

function cpumaskKey(type: string, v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  try {
    return cpumaskHex(parseCpumask(v));
  } catch (e) {
    throw new Error(`${type}: ${(e as Error).message}`);
  }
}


export function exportFromSpec(spec: string): ExportConfig {
  const { type, keys } = parseSpec('--export', spec);
  return exportFromKeys(type, keys);
}

/** JSON config: {"reactors": 1, "bdevs": [{"type": "malloc", "name": "m0", "size": "1G"}], "exports": [{"type": "vhost-user", "bdev": "m0", "socket": "/run/vdx/m0.sock"}]} */
/**
 * The user bdev modules a JSON config names ("modules": ["./my-bdev.js"],
 * relative to the file), to load before its bdevs are read; none for a saved
 * configuration (SPDK's format has no such list).
 */
export function configModules(path: string): string[] {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return []; // loadConfigFile says what is wrong with it
  }
  if (typeof raw !== 'object' || raw === null || !('modules' in raw)) return [];
  const m = (raw as { modules: unknown }).modules;
  if (!Array.isArray(m) || !m.every((x) => typeof x === 'string' && x !== '')) throw new Error(`--config ${path}: modules must be an array of paths, e.g. ["./my-bdev.js"]`);
  return m.map((x: string) => resolveModulePath(x, dirname(resolvePath(path))));
}

export function loadConfigFile(path: string): Partial<DaemonConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`--config ${path}: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error(`--config ${path}: expected a JSON object`);
  if (isSavedConfig(raw)) {
    const r = savedReactors(`--config ${path}`, raw);
    return { ...(r.count ? { reactors: r.count } : {}), ...(r.cpus ? { cpus: r.cpus } : {}), ...(r.idleSpinUs !== undefined ? { idleSpinUs: r.idleSpinUs } : {}), saved: { where: `--config ${path}`, doc: raw } };
  }
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!['modules', 'reactors', 'cpumask', 'idleSpinUs', 'bdevs', 'exports'].includes(k)) throw new Error(`--config ${path}: unknown key '${k}'; known keys: modules, reactors, cpumask, idleSpinUs, bdevs, exports`);
  }
  const strs = (what: string, v: unknown): Record<string, string> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`--config ${path}: each of ${what} must be an object`);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, String(x)]));
  };
  const out: Partial<DaemonConfig> = {};
  if (o.reactors !== undefined) out.reactors = intKey('config', 'reactors', String(o.reactors), 1, 1, 64);
  if (o.cpumask !== undefined) out.cpus = parseCpumask(String(o.cpumask));
  if (o.idleSpinUs !== undefined) out.idleSpinUs = intKey('config', 'idleSpinUs', String(o.idleSpinUs), 0, 0, 10_000_000);
  if (o.bdevs !== undefined) {
    if (!Array.isArray(o.bdevs)) throw new Error(`--config ${path}: bdevs must be an array`);
    out.bdevs = o.bdevs.map((b) => {
      const { type, ...keys } = strs('bdevs', b);
      if (!type) throw new Error(`--config ${path}: a bdev has no type`);
      return bdevFromSpec(`${type}:${Object.entries(keys).map(([k, v]) => `${k}=${v.replace(/,/g, ',,')}`).join(',')}`);
    });
  }
  if (o.exports !== undefined) {
    if (!Array.isArray(o.exports)) throw new Error(`--config ${path}: exports must be an array`);
    out.exports = o.exports.map((x) => {
      const { type, ...keys } = strs('exports', x);
      if (!type) throw new Error(`--config ${path}: an export has no type`);
      return exportFromKeys(type, keys);
    });
  }
  return out;
}

/** Cross-checks: unique names, every export names a bdev that exists (a saved configuration's are checked as it is replayed). */
export function validateConfig(c: DaemonConfig): void {
  if (c.saved) return;
  const names = new Set<string>();
  for (const b of c.bdevs) {
    // A layer is built on bdevs defined before it.
    const module = bdevModule(b.type);
    const named: [string, string][] = module.baseNames ? module.baseNames(b).map((n) => ['member', n]) : (module.baseKeys ?? []).map((k) => [k, b[k]!]);
    for (const [k, base] of named) {
      if (base !== undefined && !names.has(base)) {
        throw new Error(`bdev ${b.type}${b.name ? ` '${b.name}'` : ''}: ${k}=${base} is not defined before it; defined bdevs: ${[...names].join(', ') || 'none'}`);
      }
    }
    for (const name of bdevNames(b)) {
      if (names.has(name)) throw new Error(`bdev name '${name}' is used twice`);
      names.add(name);
    }
  }
  const sockets = new Set<string>();
  const exportNames = new Set<string>();
  for (const x of c.exports) {
    if (!names.has(x.bdev)) throw new Error(`export '${x.name}': bdev=${x.bdev} is not defined; defined bdevs: ${[...names].join(', ') || 'none'}`);
    if (x.type === 'vhost-user') {
      if (sockets.has(x.socket)) throw new Error(`socket ${x.socket} is used by two exports`);
      sockets.add(x.socket);
    }
    if (exportNames.has(x.name)) throw new Error(`export name '${x.name}' is used twice`);
    exportNames.add(x.name);
  }
}
