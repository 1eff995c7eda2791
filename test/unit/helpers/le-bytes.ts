// Little-endian payloads for vhost-user messages in tests.

export const u64 = (x: bigint): Uint8Array => {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, x, true);
  return b;
};

export const u32pair = (a: number, b: number): Uint8Array => {
  const x = new Uint8Array(8);
  const v = new DataView(x.buffer);
  v.setUint32(0, a, true);
  v.setUint32(4, b, true);
  return x;
};
