// struct iovec arrays written into memory the kernel (io_uring, sendmsg) or a
// library (librbd) reads: 16 bytes each, little-endian u64 base and length.

export const IOVEC_BYTES = 16;

/** Write one iovec at byte `at` of `dv`. Addresses and lengths stay below 2^53. */
export function putIovec(dv: DataView, at: number, addr: number, len: number): void {
  dv.setUint32(at, addr % 0x1_0000_0000, true);
  dv.setUint32(at + 4, Math.floor(addr / 0x1_0000_0000), true);
  dv.setUint32(at + 8, len % 0x1_0000_0000, true);
  dv.setUint32(at + 12, Math.floor(len / 0x1_0000_0000), true);
}

/** Write an I/O's (hostAddr, len) pairs as `n` iovecs from byte `at`. */
export function putIovecs(dv: DataView, at: number, iov: Float64Array, n: number): void {
  for (let i = 0; i < n; i++) putIovec(dv, at + i * IOVEC_BYTES, iov[2 * i]!, iov[2 * i + 1]!);
}
