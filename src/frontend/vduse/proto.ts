// VDUSE uapi (include/uapi/linux/vduse.h, identical in 6.1 and 6.12; see
// ../shared/reference/protocols.md §3): ioctl numbers and struct codecs.
export const VDUSE_API_VERSION = 0;
export const VDUSE_NAME_MAX = 256;
export const VDUSE_GET_API_VERSION = 0x80088100;
export const VDUSE_SET_API_VERSION = 0x40088101;
export const VDUSE_CREATE_DEV = 0x41508102;
export const VDUSE_DESTROY_DEV = 0x41008103;
export const VDUSE_IOTLB_GET_FD = 0xc0208110;
export const VDUSE_DEV_GET_FEATURES = 0x80088111;
export const VDUSE_DEV_SET_CONFIG = 0x40088112;
export const VDUSE_DEV_INJECT_CONFIG_IRQ = 0x00008113;
export const VDUSE_VQ_SETUP = 0x40208114;
export const VDUSE_VQ_GET_INFO = 0xc0308115;
export const VDUSE_VQ_SETUP_KICKFD = 0x40088116;
export const VDUSE_VQ_INJECT_IRQ = 0x40048117;

export const VDUSE_GET_VQ_STATE = 0;
export const VDUSE_SET_STATUS = 1;
export const VDUSE_UPDATE_IOTLB = 2;
export const VDUSE_REQ_RESULT_OK = 0;
export const VDUSE_REQ_RESULT_FAILED = 1;
export const VDUSE_ACCESS_RO = 1;
export const VDUSE_ACCESS_WO = 2;
export const VDUSE_ACCESS_RW = 3;

export const VDUSE_MSG_SIZE = 152;
export const DEV_CONFIG_HDR = 336;

const enc = new TextEncoder();

/** struct vduse_dev_config + config bytes, for VDUSE_CREATE_DEV. */
export function encodeDevConfig(o: {
  name: string;
  deviceId: number;
  features: bigint;
  vqNum: number;
  vqAlign: number;
  config: Uint8Array;
}): Uint8Array {
  const name = enc.encode(o.name);
  if (name.length === 0 || name.length >= VDUSE_NAME_MAX) throw new Error(`name must be 1..${VDUSE_NAME_MAX - 1} bytes`);
  const b = new Uint8Array(DEV_CONFIG_HDR + o.config.length);
  const v = new DataView(b.buffer);
  b.set(name, 0);
  v.setUint32(256, 0, true); // vendor_id
  v.setUint32(260, o.deviceId, true);
  v.setBigUint64(264, o.features, true);
  v.setUint32(272, o.vqNum, true);
  v.setUint32(276, o.vqAlign, true);
  // reserved[13] @280 stays zero: the kernel rejects anything else
  v.setUint32(332, o.config.length, true);
  b.set(o.config, DEV_CONFIG_HDR);
  return b;
}

/** char[256] name, for VDUSE_DESTROY_DEV. */
export function encodeName(name: string): Uint8Array {
  const b = new Uint8Array(VDUSE_NAME_MAX);
  b.set(enc.encode(name).subarray(0, VDUSE_NAME_MAX - 1));
  return b;
}

/** struct vduse_vq_config {u32 index; u16 max_size; u16 reserved[13]} = 32 bytes. */
export function encodeVqConfig(index: number, maxSize: number): Uint8Array {
  const b = new Uint8Array(32);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setUint16(4, maxSize, true);
  return b;
}

/** struct vduse_vq_eventfd {u32 index; s32 fd}. */
export function encodeVqEventfd(index: number, fd: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, index, true);
  v.setInt32(4, fd, true);
  return b;
}

export interface VqInfo {
  index: number;
  num: number;
  descAddr: bigint;
  driverAddr: bigint;
  deviceAddr: bigint;
  /** split: the avail index to start from */
  availIndex: number;
  /** packed: next avail and next used position, each index | wrap counter << 15 */
  packedAvail: number;
  packedUsed: number;
  ready: boolean;
}

/** struct vduse_vq_info (48 bytes): in = index, out = the rest. */
export function vqInfoBuffer(index: number): Uint8Array {
  const b = new Uint8Array(48);
  new DataView(b.buffer).setUint32(0, index, true);
  return b;
}

export function decodeVqInfo(b: Uint8Array): VqInfo {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return {
    index: v.getUint32(0, true),
    num: v.getUint32(4, true),
    descAddr: v.getBigUint64(8, true),
    driverAddr: v.getBigUint64(16, true),
    deviceAddr: v.getBigUint64(24, true),
    availIndex: v.getUint16(32, true),
    // struct vduse_vq_state_packed: avail counter, avail idx, used counter, used idx
    packedAvail: (v.getUint16(34, true) & 0x7fff) | (v.getUint16(32, true) ? 0x8000 : 0),
    packedUsed: (v.getUint16(38, true) & 0x7fff) | (v.getUint16(36, true) ? 0x8000 : 0),
    ready: b[40] !== 0,
  };
}

// struct vduse_iotlb_entry is shared with the reactors' lazy IOTLB mapper.
export { iotlbBuffer, decodeIotlb, type IotlbEntry } from '../../core/iotlb.js';

export type VduseRequest =
  | { type: typeof VDUSE_GET_VQ_STATE; id: number; index: number }
  | { type: typeof VDUSE_SET_STATUS; id: number; status: number }
  | { type: typeof VDUSE_UPDATE_IOTLB; id: number; start: bigint; last: bigint }
  | { type: number; id: number };

/** struct vduse_dev_request (152 bytes) read from /dev/vduse/$NAME. */
export function decodeRequest(b: Uint8Array): VduseRequest | undefined {
  if (b.length < VDUSE_MSG_SIZE) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const type = v.getUint32(0, true);
  const id = v.getUint32(4, true);
  switch (type) {
    case VDUSE_GET_VQ_STATE:
      return { type, id, index: v.getUint32(24, true) };
    case VDUSE_SET_STATUS:
      return { type, id, status: b[24]! };
    case VDUSE_UPDATE_IOTLB:
      return { type, id, start: v.getBigUint64(24, true), last: v.getBigUint64(32, true) };
    default:
      return { type, id };
  }
}

/** struct vduse_dev_response (152 bytes); reserved words must be zero. */
/**
 * struct vduse_dev_response; a GET_VQ_STATE answer carries struct vduse_vq_state:
 * split = the avail index, packed = next avail and next used as index | wrap << 15.
 */
export function encodeResponse(
  id: number,
  result: number,
  state?: { index: number; avail: number } | { index: number; packedAvail: number; packedUsed: number },
): Uint8Array {
  const b = new Uint8Array(VDUSE_MSG_SIZE);
  const v = new DataView(b.buffer);
  v.setUint32(0, id, true);
  v.setUint32(4, result, true);
  if (state) {
    v.setUint32(24, state.index, true);
    if ('avail' in state) {
      v.setUint16(28, state.avail, true);
    } else {
      v.setUint16(28, state.packedAvail >> 15, true);
      v.setUint16(30, state.packedAvail & 0x7fff, true);
      v.setUint16(32, state.packedUsed >> 15, true);
      v.setUint16(34, state.packedUsed & 0x7fff, true);
    }
  }
  return b;
}
