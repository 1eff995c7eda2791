// RPC methods are declarations (SPDK's spdk_json_decode_object tables): each
// method lists its parameters with a decoder, so validation, the -32602 error
// naming the parameter, and `rpc_get_methods` all come from one place.
import { parseCpumask } from '../config/cpumask.js';
import { RpcError, RPC_INVALID_PARAMS } from './errors.js';

export class Field<T, Opt extends boolean = false> {
  constructor(
    /** what a valid value is, for errors: "an integer in 1..64" */
    readonly expected: string,
    private readonly check: (v: unknown) => T | undefined,
    readonly isOptional: Opt,
    readonly help: string,
  ) {}

  optional(): Field<T, true> {
    return new Field(this.expected, this.check, true, this.help);
  }

  describe(help: string): Field<T, Opt> {
    return new Field(this.expected, this.check, this.isOptional, help);
  }

  /** Further restrict valid values: `ok` false means out of range. */
  where(expected: string, ok: (v: T) => boolean): Field<T, Opt> {
    const check = this.check;
    return new Field(expected, (v) => {
      const x = check(v);
      return x !== undefined && ok(x) ? x : undefined;
    }, this.isOptional, this.help);
  }

  decode(v: unknown, name: string): T {
    const x = this.check(v);
    if (x === undefined) throw new RpcError(RPC_INVALID_PARAMS, `parameter '${name}' must be ${this.expected}, not ${show(v)}`);
    return x;
  }
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

export const str = new Field<string>('a string', (v) => (typeof v === 'string' ? v : undefined), false, '');
export const nonEmpty = str.where('a non-empty string', (s) => s.length > 0);
export const bool = new Field<boolean>('true or false', (v) => (typeof v === 'boolean' ? v : undefined), false, '');

/** An integer in min..max (JSON numbers; no strings, as SPDK's decoders). */
export function int(min: number, max: number): Field<number> {
  return new Field<number>(`an integer in ${min}..${max}`, (v) => (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : undefined), false, '');
}
export const u32 = int(0, 0xffff_ffff);
/** A duration in seconds, fractions allowed (timeouts). */
export const seconds = new Field<number>('a number of seconds in 0..86400', (v) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 86400 ? v : undefined), false, '');
export const u64 = int(0, Number.MAX_SAFE_INTEGER);

export function oneOf<const V extends string>(...values: V[]): Field<V> {
  return new Field<V>(`one of ${values.map((x) => `"${x}"`).join(', ')}`, (v) => (values.includes(v as V) ? (v as V) : undefined), false, '');
}

/** A size: bytes as an integer, or a string with a K/M/G/T suffix ("2G"). */
export const sizeArg = new Field<string>('a size in bytes, or a string such as "2G"', (v) => {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v > 0) return String(v);
  if (typeof v === 'string' && /^\d+\s*[KMGT]?(i?B)?$/i.test(v.trim())) return v.trim();
  return undefined;
}, false, '');

/** A list of bdev names (bdev_raid_create's base_bdevs). */
export const nameList = new Field<string[]>('an array of non-empty strings', (v) => (Array.isArray(v) && v.every((x) => typeof x === 'string' && x.length > 0) ? (v as string[]) : undefined), false, '');

export const logicalBlockSize = int(512, 4096).where('512 or 4096', (v) => v === 512 || v === 4096);
export function powerOfTwo(min: number, max: number): Field<number> {
  return int(min, max).where(`a power of two in ${min}..${max}`, (v) => (v & (v - 1)) === 0);
}
export const serialField = str.where('at most 20 printable ASCII characters', (s) => /^[\x20-\x7e]{0,20}$/.test(s));
export const fileMode = str.where('an octal file mode such as "0600"', (s) => /^0?[0-7]{3}$/.test(s));
export const cpumaskField = str.where('a CPU mask such as "0x3", or a list such as "0,2-3"', (s) => {
  try {
    return parseCpumask(s).length > 0;
  } catch {
    return false;
  }
});

/** vdx spec keys as an object ({"size": "1G", "populate": true}): values stringified as on the command line. */
export const specKeys = new Field<Record<string, string>>('an object of key: string, number or boolean', (v) => {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === 'boolean') out[k] = x ? 'on' : 'off';
    else if (typeof x === 'string' || typeof x === 'number') out[k] = String(x);
    else return undefined;
  }
  return out;
}, false, '');

export type Schema = Record<string, Field<unknown, boolean>>;

export type Params<S extends Schema> = {
  [K in keyof S]: S[K] extends Field<infer T, infer O> ? (O extends true ? T | undefined : T) : never;
};

/** Decode by-name params against a schema; every failure is -32602 naming the parameter. */
export function decodeParams<S extends Schema>(method: string, schema: S, params: unknown): Params<S> {
  if (params === undefined || params === null) params = {};
  if (typeof params !== 'object' || Array.isArray(params)) {
    throw new RpcError(RPC_INVALID_PARAMS, `${method}: params must be an object of named parameters`);
  }
  const p = params as Record<string, unknown>;
  const names = Object.keys(schema);
  for (const k of Object.keys(p)) {
    if (!Object.hasOwn(schema, k)) {
      throw new RpcError(RPC_INVALID_PARAMS, `${method}: unknown parameter '${k}'; parameters: ${names.join(', ') || 'none'}`);
    }
  }
  const out: Record<string, unknown> = {};
  for (const k of names) {
    const f = schema[k]!;
    if (p[k] === undefined) {
      if (!f.isOptional) throw new RpcError(RPC_INVALID_PARAMS, `${method}: missing parameter '${k}' (${f.help || f.expected})`);
      continue;
    }
    try {
      out[k] = f.decode(p[k], k);
    } catch (e) {
      throw new RpcError(RPC_INVALID_PARAMS, `${method}: ${(e as Error).message}`);
    }
  }
  return out as Params<S>;
}
