// vhost-user wire format (QEMU docs/interop/vhost-user.rst; see
// ../shared/reference/protocols.md §1). Pure codecs over DataView: they fill
// structs the caller owns, return 0 or -errno and never throw.
import { E } from '../../virtio/errno.js';

export const VHOST_USER_HDR_SIZE = 12;
export const VHOST_USER_VERSION = 0x1;
export const VHOST_USER_VERSION_MASK = 0x3;
export const VHOST_USER_REPLY_MASK = 0x4;
export const VHOST_USER_NEED_REPLY_MASK = 0x8;
const RESERVED_FLAGS = ~(VHOST_USER_VERSION_MASK | VHOST_USER_REPLY_MASK | VHOST_USER_NEED_REPLY_MASK);
/** Largest payload we accept: a full memory table is 8 + 32*8; config 12 + 256. */
export const VHOST_USER_MAX_PAYLOAD = 4096;
export const VHOST_USER_MAX_FDS = 8;
export const VHOST_MEMORY_MAX_NREGIONS = 8;
export const VHOST_USER_VRING_IDX_MASK = 0xff;
export const VHOST_USER_VRING_NOFD_MASK = 0x100;

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  /** SET_SLAVE_REQ_FD in QEMU 7.2's names */
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

export const REQ_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Req).map(([k, v]) => [v, `VHOST_USER_${k}`]));

// Protocol feature bits (§1.4)
export const VHOST_USER_PROTOCOL_F_MQ = 0;
export const VHOST_USER_PROTOCOL_F_LOG_SHMFD = 1;
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3;
/** SLAVE_REQ in QEMU 7.2: the back-end may send requests on a socket the front-end hands over */
export const VHOST_USER_PROTOCOL_F_BACKEND_REQ = 5;
export const VHOST_USER_PROTOCOL_F_CONFIG = 9;
export const VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD = 12;
export const VHOST_USER_PROTOCOL_F_RESET_DEVICE = 13;
export const VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS = 15;
export const VHOST_USER_PROTOCOL_F_STATUS = 16;

interface Rule {
  /** exact payload size, -1 = checked by the payload decoder */
  readonly size: number;
  /** exact fd count, -1 = varies (checked by the handler) */
  readonly fds: number;
}
const RULES: (Rule | undefined)[] = [];
const rule = (req: number, size: number, fds: number) => (RULES[req] = { size, fds });
rule(Req.GET_FEATURES, 0, 0);
rule(Req.SET_FEATURES, 8, 0);
rule(Req.SET_OWNER, 0, 0);
rule(Req.RESET_OWNER, 0, 0);
rule(Req.SET_MEM_TABLE, -1, -1);
rule(Req.SET_VRING_NUM, 8, 0);
rule(Req.SET_VRING_ADDR, 40, 0);
rule(Req.SET_VRING_BASE, 8, 0);
rule(Req.GET_VRING_BASE, 8, 0);
rule(Req.SET_VRING_KICK, 8, -1);
rule(Req.SET_VRING_CALL, 8, -1);
rule(Req.SET_VRING_ERR, 8, -1);
rule(Req.GET_PROTOCOL_FEATURES, 0, 0);
rule(Req.SET_PROTOCOL_FEATURES, 8, 0);
rule(Req.GET_QUEUE_NUM, 0, 0);
rule(Req.SET_VRING_ENABLE, 8, 0);
rule(Req.SET_BACKEND_REQ_FD, 0, 1);
rule(Req.GET_CONFIG, -1, 0);
rule(Req.SET_CONFIG, -1, 0);
rule(Req.RESET_DEVICE, 0, 0);
rule(Req.GET_MAX_MEM_SLOTS, 0, 0);
rule(Req.ADD_MEM_REG, 40, 1);
rule(Req.REM_MEM_REG, 40, -1);
rule(Req.SET_STATUS, 8, 0);
rule(Req.GET_INFLIGHT_FD, 24, 0);
rule(Req.SET_INFLIGHT_FD, 24, 1);
rule(Req.GET_STATUS, 0, 0);

export interface Hdr {
  req: number;
  flags: number;
  size: number;
}

/**
 * Decode and validate a header before its payload is read: version, reserved
 * flags, size bound. Returns 0, -EPROTO (bad framing: drop the connection) or
 * -EMSGSIZE (payload too large).
 */
export function decodeHdr(v: DataView, at: number, h: Hdr): number {
  if (v.byteLength - at < VHOST_USER_HDR_SIZE) return -E.EAGAIN;
  h.req = v.getUint32(at, true);
  h.flags = v.getUint32(at + 4, true);
  h.size = v.getUint32(at + 8, true);
  if ((h.flags & VHOST_USER_VERSION_MASK) !== VHOST_USER_VERSION || (h.flags & RESERVED_FLAGS) !== 0) return -E.EPROTO;
  if (h.size > VHOST_USER_MAX_PAYLOAD) return -E.EMSGSIZE;
  return 0;
}

/** Check a complete message against the size/fd table. -EOPNOTSUPP for unknown ids, -EPROTO for a bad size or fd count. */
export function checkRules(h: Hdr, nfds: number): number {
  const r = RULES[h.req];
  if (r === undefined) return -E.EOPNOTSUPP;
  if (r.size >= 0 && h.size !== r.size) return -E.EPROTO;
  if (r.fds >= 0 && nfds !== r.fds) return -E.EPROTO;
  if (nfds > VHOST_USER_MAX_FDS) return -E.EPROTO;
  return 0;
}

/** A u64 as a number; -1 if it is 2^53 or more (no size or address we accept lives there). */
export function readU64(v: DataView, at: number): number {
  const lo = v.getUint32(at, true);
  const hi = v.getUint32(at + 4, true);
  return hi >= 0x20_0000 ? -1 : hi * 0x1_0000_0000 + lo;
}

export function readU64Big(v: DataView, at: number): bigint {
  return v.getBigUint64(at, true);
}

export interface MemRegionMsg {
  gpa: number;
  size: number;
  uva: number;
  mmapOffset: number;
}

/** SET_MEM_TABLE payload: u32 nregions, u32 padding, regions. One fd per region. */
export function decodeMemTable(v: DataView, at: number, size: number, nfds: number, out: MemRegionMsg[]): number {
  if (size < 8) return -E.EPROTO;
  const n = v.getUint32(at, true);
  if (n === 0 || n > VHOST_MEMORY_MAX_NREGIONS || size !== 8 + 32 * n || nfds !== n) return -E.EPROTO;
  out.length = 0;
  for (let i = 0; i < n; i++) {
    const rc = decodeRegion(v, at + 8 + 32 * i, out);
    if (rc < 0) return rc;
  }
  return 0;
}

/** One 32-byte region; rejects zero sizes and anything that overflows 2^53. */
export function decodeRegion(v: DataView, at: number, out: MemRegionMsg[]): number {
  const gpa = readU64(v, at);
  const size = readU64(v, at + 8);
  const uva = readU64(v, at + 16);
  const mmapOffset = readU64(v, at + 24);
  if (gpa < 0 || size <= 0 || uva < 0 || mmapOffset < 0) return -E.EINVAL;
  if (gpa + size > Number.MAX_SAFE_INTEGER || uva + size > Number.MAX_SAFE_INTEGER) return -E.EINVAL;
  out.push({ gpa, size, uva, mmapOffset });
  return 0;
}

export interface VringAddrMsg {
  index: number;
  flags: number;
  desc: number;
  used: number;
  avail: number;
  log: number;
}

/** struct vhost_vring_addr: index, flags, desc, used, avail, log (note: used before avail). */
export function decodeVringAddr(v: DataView, at: number, a: VringAddrMsg): number {
  a.index = v.getUint32(at, true);
  a.flags = v.getUint32(at + 4, true);
  a.desc = readU64(v, at + 8);
  a.used = readU64(v, at + 16);
  a.avail = readU64(v, at + 24);
  a.log = readU64(v, at + 32);
  if (a.desc < 0 || a.used < 0 || a.avail < 0) return -E.EINVAL;
  return 0;
}

export function encodeHdr(v: DataView, req: number, size: number): void {
  v.setUint32(0, req, true);
  v.setUint32(4, VHOST_USER_VERSION | VHOST_USER_REPLY_MASK, true); // QEMU accepts exactly 0x5
  v.setUint32(8, size, true);
}

// ------------------------------------------------------- back-end requests
// Back-end -> front-end messages on the socket SET_BACKEND_REQ_FD handed over
// (§"Back-end message types"); their ids are a numbering of their own.

export const BackendReq = {
  IOTLB_MSG: 1,
  /** no payload; QEMU 7.2 vhost-user-blk answers with GET_CONFIG + a config interrupt */
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
} as const;

export const BACKEND_REQ_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(BackendReq).map(([k, v]) => [v, `VHOST_USER_BACKEND_${k}`]),
);

/**
 * Header of a back-end request into `v` at `at`; returns the bytes written
 * (header + `size`) or -EMSGSIZE. Flags carry only the version: this is a
 * request, not a reply, and vdx never asks for NEED_REPLY (see
 * BackendChannel) so nothing ever has to be read back from this socket.
 */
export function encodeBackendReq(v: DataView, at: number, req: number, size: number): number {
  if (size < 0 || size > VHOST_USER_MAX_PAYLOAD || v.byteLength - at < VHOST_USER_HDR_SIZE + size) return -E.EMSGSIZE;
  v.setUint32(at, req, true);
  v.setUint32(at + 4, VHOST_USER_VERSION, true);
  v.setUint32(at + 8, size, true);
  return VHOST_USER_HDR_SIZE + size;
}

/** The whole CONFIG_CHANGE_MSG (it has no payload) into `v` at `at`; bytes written or -EMSGSIZE. */
export function encodeConfigChange(v: DataView, at: number): number {
  return encodeBackendReq(v, at, BackendReq.CONFIG_CHANGE_MSG, 0);
}

/**
 * Decode a back-end request header (a test front-end's side, or a trace):
 * the version must be 1 and REPLY clear; the size bounded like any message.
 * Returns 0, -EAGAIN (short), -EPROTO or -EMSGSIZE.
 */
export function decodeBackendReq(v: DataView, at: number, h: Hdr): number {
  const rc = decodeHdr(v, at, h);
  if (rc < 0) return rc;
  if ((h.flags & VHOST_USER_REPLY_MASK) !== 0) return -E.EPROTO;
  return 0;
}
