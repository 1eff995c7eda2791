// Every bdev type vdx knows; nothing registers itself on import.
import { delayBdev } from './delay.js';
import { errorBdev } from './error.js';
import { fileBdev } from './file.js';
import { mallocBdev } from './malloc.js';
import { nbdBdev } from './nbd/index.js';
import { nullBdev } from './null.js';
import { passthruBdev } from './passthru.js';
import { rbdBdev } from './rbd.js';
import { splitBdev } from './split.js';
import type { BdevModule } from './types.js';

export const BDEV_MODULES: Readonly<Record<string, BdevModule>> = {
  null: nullBdev,
  malloc: mallocBdev,
  file: fileBdev,
  nbd: nbdBdev,
  rbd: rbdBdev,
  split: splitBdev,
  passthru: passthruBdev,
  delay: delayBdev,
  error: errorBdev,
};

export function bdevModule(type: string): BdevModule {
  const m = Object.hasOwn(BDEV_MODULES, type) ? BDEV_MODULES[type] : undefined;
  if (!m) throw new Error(`unknown bdev type '${type}'; known types: ${Object.keys(BDEV_MODULES).join(', ')}`);
  return m;
}
