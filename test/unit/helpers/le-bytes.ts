// Little-endian payloads and whole messages for vhost-user tests.

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

/** A whole front-end message: header (request, flags, size) then payload. */
export const vhostUserMessage = (req: number, payload: Uint8Array, flags: number): Uint8Array => {
  const m = new Uint8Array(12 + payload.length);
  const v = new DataView(m.buffer);
  v.setUint32(0, req, true);
  v.setUint32(4, flags, true);
  v.setUint32(8, payload.length, true);
  m.set(payload, 12);
  return m;
};
