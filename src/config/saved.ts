// The saved configuration, in SPDK's format: {"subsystems": [{"subsystem",
// "config": [{"method", "params"}, ...]}, ...]}. `save_config` writes it,
// `vdx serve --config` and rpc.py's load_config replay it through the same
// RPC methods, so "what is running" is always one JSON document.
import type { ReactorSettings } from '../rpc/methods/context.js';
import { cpumaskField, decodeParams, int } from '../rpc/schema.js';
import { parseCpumask } from './cpumask.js';

export interface SavedConfig {
  subsystems: { subsystem: string; config: { method: string; params?: Record<string, unknown> }[] | null }[];
}

export function isSavedConfig(raw: unknown): raw is SavedConfig {
  return typeof raw === 'object' && raw !== null && 'subsystems' in raw;
}

/** Check the document's shape; every problem names where it is. */
export function checkSavedConfig(where: string, raw: SavedConfig): void {
  const keys = Object.keys(raw).filter((k) => k !== 'subsystems');
  if (keys.length) throw new Error(`${where}: unknown key '${keys[0]}'; a saved configuration has only "subsystems"`);
  if (!Array.isArray(raw.subsystems)) throw new Error(`${where}: "subsystems" must be an array`);
  raw.subsystems.forEach((s, i) => {
    if (typeof s !== 'object' || s === null || typeof s.subsystem !== 'string') throw new Error(`${where}: subsystems[${i}] needs a "subsystem" name`);
    if (s.config === null || s.config === undefined) return;
    if (!Array.isArray(s.config)) throw new Error(`${where}: subsystem ${s.subsystem}: "config" must be an array or null`);
    s.config.forEach((c, j) => {
      if (typeof c !== 'object' || c === null || typeof c.method !== 'string') throw new Error(`${where}: subsystem ${s.subsystem}, config[${j}]: needs a "method"`);
      if (c.params !== undefined && (typeof c.params !== 'object' || c.params === null || Array.isArray(c.params))) {
        throw new Error(`${where}: subsystem ${s.subsystem}, config[${j}] (${c.method}): "params" must be an object`);
      }
    });
  });
}

/** framework_set_reactors' parameters: what the reactors were at save time. */
export const reactorSchema = {
  count: int(1, 64).describe('reactor threads'),
  cpumask: cpumaskField.optional().describe('CPUs the reactors are pinned to, one each in turn'),
  idle_spin_us: int(0, 10_000_000).optional().describe('polling window after the last work before a reactor sleeps'),
};

/** The reactor settings a saved configuration asks for (framework_set_reactors), applied before anything starts. */
export function savedReactors(where: string, raw: SavedConfig): Partial<ReactorSettings> {
  for (const s of raw.subsystems) {
    for (const c of s.config ?? []) {
      if (c.method !== 'framework_set_reactors') continue;
      let p;
      try {
        p = decodeParams('framework_set_reactors', reactorSchema, c.params);
      } catch (e) {
        throw new Error(`${where}: subsystem ${s.subsystem}: ${(e as Error).message}`);
      }
      return { count: p.count, ...(p.cpumask !== undefined ? { cpus: parseCpumask(p.cpumask) } : {}), ...(p.idle_spin_us !== undefined ? { idleSpinUs: p.idle_spin_us } : {}) };
    }
  }
  return {};
}
