// Generic netlink codec for the vdpa family (include/uapi/linux/vdpa.h; see
// ../shared/reference/protocols.md §4). Pure: builds and parses bytes.

export const NLMSG_HDRLEN = 16;
export const GENL_HDRLEN = 4;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_DUMP = 0x300;
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;
export const NLA_TYPE_MASK = 0x3fff;

export const GENL_ID_CTRL = 0x10;
export const CTRL_CMD_GETFAMILY = 3;
export const CTRL_ATTR_FAMILY_ID = 1;
export const CTRL_ATTR_FAMILY_NAME = 2;

export const VDPA_GENL_NAME = 'vdpa';
export const VDPA_GENL_VERSION = 1;
export const VDPA_CMD_MGMTDEV_NEW = 1;
export const VDPA_CMD_MGMTDEV_GET = 2;
export const VDPA_CMD_DEV_NEW = 3;
export const VDPA_CMD_DEV_DEL = 4;
export const VDPA_CMD_DEV_GET = 5;

export const VDPA_ATTR_MGMTDEV_BUS_NAME = 1;
export const VDPA_ATTR_MGMTDEV_DEV_NAME = 2;
export const VDPA_ATTR_MGMTDEV_SUPPORTED_CLASSES = 3;
export const VDPA_ATTR_DEV_NAME = 4;
export const VDPA_ATTR_DEV_ID = 5;
export const VDPA_ATTR_DEV_VENDOR_ID = 6;
export const VDPA_ATTR_DEV_MAX_VQS = 7;
export const VDPA_ATTR_DEV_MAX_VQ_SIZE = 8;
export const VDPA_ATTR_DEV_MIN_VQ_SIZE = 9;
export const VDPA_ATTR_DEV_MGMTDEV_MAX_VQS = 15;
export const VDPA_ATTR_DEV_SUPPORTED_FEATURES = 16;

export type Attr = [type: number, value: Uint8Array];

const enc = new TextEncoder();
const dec = new TextDecoder();

/** NUL-terminated string attribute (the kernel compares with strcmp). */
export function strAttr(type: number, s: string): Attr {
  const b = enc.encode(s);
  const v = new Uint8Array(b.length + 1);
  v.set(b);
  return [type, v];
}

const align4 = (n: number) => (n + 3) & ~3;

/** nlmsghdr + genlmsghdr + attributes, each attribute padded to 4 bytes. */
export function encodeGenl(family: number, cmd: number, version: number, flags: number, seq: number, attrs: Attr[]): Uint8Array {
  let len = NLMSG_HDRLEN + GENL_HDRLEN;
  for (const [, v] of attrs) len += align4(4 + v.length);
  const b = new Uint8Array(len);
  const d = new DataView(b.buffer);
  d.setUint32(0, len, true);
  d.setUint16(4, family, true);
  d.setUint16(6, flags, true);
  d.setUint32(8, seq, true);
  d.setUint32(12, 0, true);
  b[16] = cmd;
  b[17] = version;
  let at = NLMSG_HDRLEN + GENL_HDRLEN;
  for (const [type, v] of attrs) {
    d.setUint16(at, 4 + v.length, true);
    d.setUint16(at + 2, type, true);
    b.set(v, at + 4);
    at += align4(4 + v.length);
  }
  return b;
}

export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  /** bytes after the 16-byte header */
  payload: Uint8Array;
}

/** Split a datagram into messages; a malformed length ends the walk (returned as `error`). */
export function decodeMessages(buf: Uint8Array): { msgs: NlMsg[]; error?: string } {
  const d = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const msgs: NlMsg[] = [];
  let at = 0;
  while (at + NLMSG_HDRLEN <= buf.length) {
    const len = d.getUint32(at, true);
    if (len < NLMSG_HDRLEN || at + len > buf.length) return { msgs, error: `netlink message length ${len} at offset ${at} is invalid` };
    msgs.push({
      type: d.getUint16(at + 4, true),
      flags: d.getUint16(at + 6, true),
      seq: d.getUint32(at + 8, true),
      pid: d.getUint32(at + 12, true),
      payload: buf.subarray(at + NLMSG_HDRLEN, at + len),
    });
    at += align4(len);
  }
  return { msgs };
}

/** Attributes of a region (type -> value; flags bits masked off; a truncated attribute ends the walk). */
export function decodeAttrs(b: Uint8Array): Map<number, Uint8Array> {
  const d = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = new Map<number, Uint8Array>();
  let at = 0;
  while (at + 4 <= b.length) {
    const len = d.getUint16(at, true);
    if (len < 4 || at + len > b.length) break;
    out.set(d.getUint16(at + 2, true) & NLA_TYPE_MASK, b.subarray(at + 4, at + len));
    at += align4(len);
  }
  return out;
}

export const attrStr = (v: Uint8Array | undefined): string | undefined => {
  if (v === undefined) return undefined;
  const z = v.indexOf(0);
  return dec.decode(z >= 0 ? v.subarray(0, z) : v);
};
export const attrU16 = (v: Uint8Array | undefined) => (v && v.length >= 2 ? new DataView(v.buffer, v.byteOffset).getUint16(0, true) : undefined);
export const attrU32 = (v: Uint8Array | undefined) => (v && v.length >= 4 ? new DataView(v.buffer, v.byteOffset).getUint32(0, true) : undefined);
export const attrU64 = (v: Uint8Array | undefined) => (v && v.length >= 8 ? new DataView(v.buffer, v.byteOffset).getBigUint64(0, true) : undefined);

/** Genl payload -> {cmd, attrs}. */
export function decodeGenl(payload: Uint8Array): { cmd: number; version: number; attrs: Map<number, Uint8Array> } {
  return { cmd: payload[0] ?? 0, version: payload[1] ?? 0, attrs: decodeAttrs(payload.subarray(GENL_HDRLEN)) };
}

/** NLMSG_ERROR payload: errno (0 = ACK) and the extended-ACK message if the kernel sent one. */
export function decodeError(m: NlMsg): { errno: number; message?: string; offset?: number } {
  const d = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
  if (m.payload.length < 4) return { errno: 5 };
  const err = d.getInt32(0, true);
  const r: { errno: number; message?: string; offset?: number } = { errno: err === 0 ? 0 : -err };
  if (m.flags & NLM_F_ACK_TLVS && m.payload.length >= 4 + NLMSG_HDRLEN) {
    // The echoed request follows: only its header when capped, else all of it.
    const echoed = m.flags & NLM_F_CAPPED ? NLMSG_HDRLEN : d.getUint32(4, true);
    const tlvs = decodeAttrs(m.payload.subarray(4 + align4(echoed)));
    const msg = attrStr(tlvs.get(NLMSGERR_ATTR_MSG));
    if (msg) r.message = msg;
    const offs = attrU32(tlvs.get(NLMSGERR_ATTR_OFFS));
    if (offs !== undefined) r.offset = offs;
  }
  return r;
}

export interface MgmtDev {
  bus?: string;
  name: string;
  /** bit n set = virtio device id n (2 = block) */
  supportedClasses: bigint;
  maxVqs?: number;
}

export interface VdpaDev {
  name: string;
  mgmtdev: string;
  bus?: string;
  deviceId: number;
  vendorId: number;
  maxVqs: number;
  maxVqSize: number;
  minVqSize?: number;
}

export function parseMgmtDev(payload: Uint8Array): MgmtDev {
  const { attrs } = decodeGenl(payload);
  const bus = attrStr(attrs.get(VDPA_ATTR_MGMTDEV_BUS_NAME));
  const m: MgmtDev = {
    name: attrStr(attrs.get(VDPA_ATTR_MGMTDEV_DEV_NAME)) ?? '',
    supportedClasses: attrU64(attrs.get(VDPA_ATTR_MGMTDEV_SUPPORTED_CLASSES)) ?? 0n,
  };
  if (bus !== undefined) m.bus = bus;
  const maxVqs = attrU32(attrs.get(VDPA_ATTR_DEV_MGMTDEV_MAX_VQS));
  if (maxVqs !== undefined) m.maxVqs = maxVqs;
  return m;
}

export function parseDev(payload: Uint8Array): VdpaDev {
  const { attrs } = decodeGenl(payload);
  const d: VdpaDev = {
    name: attrStr(attrs.get(VDPA_ATTR_DEV_NAME)) ?? '',
    mgmtdev: attrStr(attrs.get(VDPA_ATTR_MGMTDEV_DEV_NAME)) ?? '',
    deviceId: attrU32(attrs.get(VDPA_ATTR_DEV_ID)) ?? 0,
    vendorId: attrU32(attrs.get(VDPA_ATTR_DEV_VENDOR_ID)) ?? 0,
    maxVqs: attrU32(attrs.get(VDPA_ATTR_DEV_MAX_VQS)) ?? 0,
    maxVqSize: attrU16(attrs.get(VDPA_ATTR_DEV_MAX_VQ_SIZE)) ?? 0,
  };
  const bus = attrStr(attrs.get(VDPA_ATTR_MGMTDEV_BUS_NAME));
  if (bus !== undefined) d.bus = bus;
  const min = attrU16(attrs.get(VDPA_ATTR_DEV_MIN_VQ_SIZE));
  if (min !== undefined) d.minVqSize = min;
  return d;
}
