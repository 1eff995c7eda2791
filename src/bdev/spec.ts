// Parsing of bdev spec values, shared by the bdev modules. Errors name the key
// and say what would be right.

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/** "1G", "512M", "4096", "64K", "1GiB" -> bytes, a positive multiple of `multiple`. */
export function parseSize(key: string, value: string, multiple = 1): number {
  const m = /^(\d+)\s*([KMGT]?)(i?B)?$/i.exec(value.trim());
  if (!m) throw new Error(`${key}=${value}: not a size; use a number with an optional K, M, G or T suffix (e.g. 1G)`);
  const bytes = Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`${key}=${value}: must be a positive size below 8 PiB`);
  if (bytes % multiple !== 0) throw new Error(`${key}=${value}: must be a multiple of ${multiple} bytes`);
  return bytes;
}

export function parseBlockSize(value: string | undefined): number {
  if (value === undefined) return 512;
  if (value === '512' || value === '4096') return Number(value);
  throw new Error(`block-size=${value}: must be 512 or 4096`);
}

export function parseBool(key: string, value: string | undefined, dflt: boolean): boolean {
  if (value === undefined) return dflt;
  if (/^(on|true|yes|1)$/i.test(value)) return true;
  if (/^(off|false|no|0)$/i.test(value)) return false;
  throw new Error(`${key}=${value}: must be on or off`);
}

/** Reject unknown keys and missing required ones, naming them. */
export function checkKeys(type: string, spec: Record<string, string>, known: Record<string, string>, required: string[]): void {
  for (const k of Object.keys(spec)) {
    if (!Object.hasOwn(known, k)) throw new Error(`${type}: unknown key '${k}'; known keys: ${Object.keys(known).join(', ')}`);
  }
  for (const k of required) {
    if (spec[k] === undefined || spec[k] === '') throw new Error(`${type}: missing ${k}= (${known[k]})`);
  }
}
