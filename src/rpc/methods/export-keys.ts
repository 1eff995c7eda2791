// RPC parameters -> vdx export keys, so RPC-made exports go through the very
// validation `--export TYPE:key=value,...` does (config/config.ts).
import { exportFromKeys, type ExportConfig } from '../../config/config.js';
import { invalidParams } from '../errors.js';

/** Keys with undefined values are left out (the export's defaults apply). */
export function exportConfig(type: 'vhost-user' | 'vduse', keys: Record<string, string | number | boolean | undefined>): ExportConfig {
  const k: Record<string, string> = {};
  for (const [key, v] of Object.entries(keys)) {
    if (v === undefined) continue;
    k[key] = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
  }
  try {
    return exportFromKeys(type, k);
  } catch (e) {
    throw invalidParams((e as Error).message);
  }
}
