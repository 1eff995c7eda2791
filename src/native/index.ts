// The only module that loads the addon. Everything else reaches the kernel
// through the typed interface below, so tests can inject a fake.
import { createRequire } from 'node:module';
import { VdxError } from './vdx-error.js';

export { VdxError } from './vdx-error.js';
export { errnoName, E } from './errno.js';

/** The raw addon: slow-path calls throw errors carrying {errno, syscall}; hot-path calls return -errno. */
export interface NativeShim {
  close(fd: number): number;
  eventfd(initval: number, flags: number): number;
  eventfdRead(fd: number): number;
  eventfdWrite(fd: number, add: number): number;
  readonly EFD_NONBLOCK: number;
  readonly EFD_CLOEXEC: number;
  readonly EFD_SEMAPHORE: number;
}

interface ShimError {
  errno?: unknown;
  syscall?: unknown;
  message?: unknown;
}

/** Turn the addon's plain Error into a VdxError so callers can switch on `code`. */
function wrapThrowing<F extends (...args: never[]) => unknown>(fn: F): F {
  return ((...args: Parameters<F>) => {
    try {
      return fn(...args);
    } catch (e) {
      const se = e as ShimError;
      if (typeof se?.errno === 'number' && typeof se.syscall === 'string') throw new VdxError(se.errno, se.syscall);
      throw e;
    }
  }) as F;
}

let loaded: NativeShim | undefined;

/** Load the addon once per thread (workers load their own instance). */
export function loadNative(): NativeShim {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  let raw: NativeShim;
  try {
    raw = require('../../build/Release/vdx_native.node') as NativeShim;
  } catch (e) {
    throw new Error(`vdx native shim not built (${(e as Error).message}); run 'npm ci' or 'npm run install'`);
  }
  loaded = { ...raw, eventfd: wrapThrowing(raw.eventfd) };
  return loaded;
}
