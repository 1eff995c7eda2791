// Every bdev type vdx knows: the built-in ones, listed here (nothing registers
// itself on import), and those of user modules loaded with --bdev-module,
// registered by the daemon in its main thread and in every reactor.
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cryptBdev } from './crypt.js';
import { delayBdev } from './delay.js';
import { errorBdev } from './error.js';
import { fileBdev } from './file.js';
import { mallocBdev } from './malloc.js';
import { nbdBdev } from './nbd/index.js';
import { nullBdev } from './null.js';
import { passthruBdev } from './passthru.js';
import { raid1Bdev } from './raid1.js';
import { rbdBdev } from './rbd.js';
import { splitBdev } from './split.js';
import type { BdevModule } from './types.js';

export const BDEV_MODULES: Record<string, BdevModule> = {
  null: nullBdev,
  malloc: mallocBdev,
  file: fileBdev,
  nbd: nbdBdev,
  rbd: rbdBdev,
  split: splitBdev,
  passthru: passthruBdev,
  delay: delayBdev,
  error: errorBdev,
  raid1: raid1Bdev,
  crypt: cryptBdev,
};

/** type -> the file a user module came from */
const SOURCES = new Map<string, string>();

export function bdevModule(type: string): BdevModule {
  const m = Object.hasOwn(BDEV_MODULES, type) ? BDEV_MODULES[type] : undefined;
  if (!m) throw new Error(`unknown bdev type '${type}'; known types: ${Object.keys(BDEV_MODULES).join(', ')}`);
  return m;
}

/** Where a user module's type came from, for messages; undefined for built-in types. */
export function bdevModuleSource(type: string): string | undefined {
  return SOURCES.get(type);
}

/** A module path as given (relative to `base`) -> the absolute path every thread imports. */
export function resolveModulePath(path: string, base = process.cwd()): string {
  return isAbsolute(path) ? path : resolve(base, path);
}

const REQUIRED_FUNCTIONS = ['normalize', 'create', 'open', 'describe', 'destroy'] as const;
const OPTIONAL_FUNCTIONS = ['resize', 'watch', 'expand', 'names', 'baseNames'] as const;

/**
 * Import a user's ES module and register the bdev types it exports (its
 * default export: one module or an array of them). Each function the main
 * thread calls is wrapped so that what it throws names the module; the
 * channel's methods are not (they are the hot path), and the reactor names
 * the module when one throws.
 */
export async function loadBdevModule(path: string): Promise<string[]> {
  let ns: { default?: unknown };
  try {
    ns = (await import(pathToFileURL(path).href)) as { default?: unknown };
  } catch (e) {
    throw new Error(`--bdev-module ${path}: cannot load it: ${(e as Error).message}`);
  }
  const exported = ns.default;
  if (exported === undefined) throw new Error(`--bdev-module ${path}: it has no default export; export default a bdev module (or an array of them)`);
  const list = Array.isArray(exported) ? (exported as unknown[]) : [exported];
  const types: string[] = [];
  for (const [i, m] of list.entries()) types.push(register(m, Array.isArray(exported) ? `${path} [${i}]` : path));
  return types;
}

function register(raw: unknown, source: string): string {
  const where = `--bdev-module ${source}`;
  if (typeof raw !== 'object' || raw === null) throw new Error(`${where}: the default export is not a bdev module object`);
  const m = raw as Record<string, unknown>;
  if (typeof m.type !== 'string' || !/^[a-z][a-z0-9_-]{0,31}$/.test(m.type)) throw new Error(`${where}: type must be a lowercase name such as "cow" (letters, digits, - and _), not ${JSON.stringify(m.type)}`);
  const type = m.type;
  if (Object.hasOwn(BDEV_MODULES, type)) {
    const by = SOURCES.get(type);
    throw new Error(`${where}: type '${type}' is taken by ${by ? `--bdev-module ${by}` : 'a built-in bdev'}; give the module a type of its own`);
  }
  if (typeof m.keys !== 'object' || m.keys === null || !Object.values(m.keys).every((v) => typeof v === 'string')) {
    throw new Error(`${where} (type ${type}): keys must map each spec key to a one-line meaning, e.g. { name: 'bdev name (required)' }`);
  }
  for (const f of REQUIRED_FUNCTIONS) if (typeof m[f] !== 'function') throw new Error(`${where} (type ${type}): ${f}() is missing; a bdev module has ${REQUIRED_FUNCTIONS.join(', ')}`);
  for (const f of OPTIONAL_FUNCTIONS) if (m[f] !== undefined && typeof m[f] !== 'function') throw new Error(`${where} (type ${type}): ${f} must be a function if given`);
  if (m.baseKeys !== undefined && !(Array.isArray(m.baseKeys) && m.baseKeys.every((k) => typeof k === 'string' && Object.hasOwn(m.keys as object, k)))) {
    throw new Error(`${where} (type ${type}): baseKeys must list keys of its own keys`);
  }
  const mod = raw as BdevModule;
  const named = <A extends unknown[], R>(what: string, f: (...a: A) => R) => (...a: A): R => {
    const fail = (e: unknown): never => {
      const err = new Error(`bdev module ${source} (type ${type}), ${what}: ${(e as Error)?.message ?? String(e)}`);
      const errno = (e as { errno?: unknown })?.errno;
      throw typeof errno === 'number' ? Object.assign(err, { errno }) : err;
    };
    try {
      const r = f.apply(mod, a);
      return r instanceof Promise ? (r.catch(fail) as R) : r;
    } catch (e) {
      return fail(e);
    }
  };
  const wrapped: BdevModule = {
    type,
    keys: { ...mod.keys },
    ...(mod.baseKeys ? { baseKeys: [...mod.baseKeys] } : {}),
    normalize: named('normalize', mod.normalize),
    create: named('create', mod.create),
    open: named('open', mod.open),
    describe: named('describe', mod.describe),
    destroy: named('destroy', mod.destroy),
    ...(mod.resize ? { resize: named('resize', mod.resize) } : {}),
    ...(mod.watch ? { watch: named('watch', mod.watch) } : {}),
    ...(mod.expand ? { expand: named('expand', mod.expand) } : {}),
    ...(mod.names ? { names: named('names', mod.names) } : {}),
    ...(mod.baseNames ? { baseNames: named('baseNames', mod.baseNames) } : {}),
  };
  BDEV_MODULES[type] = wrapped;
  SOURCES.set(type, source);
  return type;
}
