// The public API for bdev modules: what a user's ES module (vdx serve
// --bdev-module ./my-bdev.js) imports from 'vdx/bdev'. The built-in layers are
// written against exactly this; README "Writing a bdev module" explains the
// contract, its threads and the rules of the hot path.
import { loadNative } from '../native/index.js';

export { IoOp, MAX_IOV, BdevIo } from './types.js';
export type { BdevDesc, BdevInfo, BdevModule, Channel, ChannelContext, IoOpCode } from './types.js';
export { ChildPool, ForwardChannel, layerSpec, windowInfo } from './layer.js';
export { DeferredCompletions, IoFifo } from './deferred.js';
export { checkKeys, parseBlockSize, parseBool, parseSize } from './spec.js';

/** Memory of a channel's own, addressable like the I/O's buffers (host addresses): allocate it once, in open(). */
export interface HostBuffer {
  readonly addr: number;
  readonly bytes: Uint8Array;
  /** unmap it, in close() */
  free(): void;
}

export function hostBuffer(length: number): HostBuffer {
  const n = loadNative();
  const m = n.mmap(-1, 0, length, n.PROT_READ | n.PROT_WRITE, n.MAP_PRIVATE | n.MAP_ANONYMOUS);
  const bytes = new Uint8Array(m.buffer!);
  let freed = false;
  return {
    addr: m.addr,
    bytes,
    free() {
      if (freed) return;
      freed = true;
      n.munmap(m.buffer, m.addr, length);
    },
  };
}

/** Copy between host addresses (an I/O's iov and a HostBuffer): no allocation, no syscall. */
export function copyMemory(dstAddr: number, srcAddr: number, length: number): void {
  loadNative().memcpy(dstAddr, srcAddr, length);
}
