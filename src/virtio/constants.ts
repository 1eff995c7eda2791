// Wire constants, spelled as in the virtio spec and the Linux uapi headers so one
// grep finds both. Bit numbers end in _BIT; masks are bigint (1n << X_BIT).

// Generic feature bits (virtio 1.2 §6 "Reserved Feature Bits")
export const VIRTIO_F_NOTIFY_ON_EMPTY_BIT = 24;
export const VIRTIO_F_ANY_LAYOUT_BIT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC_BIT = 28;
export const VIRTIO_RING_F_EVENT_IDX_BIT = 29;
export const VIRTIO_F_VERSION_1_BIT = 32;
export const VIRTIO_F_ACCESS_PLATFORM_BIT = 33;
export const VIRTIO_F_RING_PACKED_BIT = 34;
// vhost-only bits
export const VHOST_F_LOG_ALL_BIT = 26;
export const VHOST_USER_F_PROTOCOL_FEATURES_BIT = 30;

// virtio-blk feature bits (virtio 1.2 §5.2.3)
export const VIRTIO_BLK_F_SIZE_MAX_BIT = 1;
export const VIRTIO_BLK_F_SEG_MAX_BIT = 2;
export const VIRTIO_BLK_F_GEOMETRY_BIT = 4;
export const VIRTIO_BLK_F_RO_BIT = 5;
export const VIRTIO_BLK_F_BLK_SIZE_BIT = 6;
export const VIRTIO_BLK_F_FLUSH_BIT = 9;
export const VIRTIO_BLK_F_TOPOLOGY_BIT = 10;
export const VIRTIO_BLK_F_CONFIG_WCE_BIT = 11;
export const VIRTIO_BLK_F_MQ_BIT = 12;
export const VIRTIO_BLK_F_DISCARD_BIT = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES_BIT = 14;

export const bit = (b: number): bigint => 1n << BigInt(b);

// Descriptor flags (split ring)
export const VRING_DESC_F_NEXT = 1;
export const VRING_DESC_F_WRITE = 2;
export const VRING_DESC_F_INDIRECT = 4;
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
export const VRING_USED_F_NO_NOTIFY = 1;

// Device status (virtio 1.2 §2.1)
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 64;
export const VIRTIO_CONFIG_S_FAILED = 128;

// virtio-blk request types and status (virtio 1.2 §5.2.6)
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
export const VIRTIO_BLK_ID_BYTES = 20;
export const VIRTIO_BLK_SECTOR_SIZE = 512;
export const VIRTIO_BLK_REQ_HDR_SIZE = 16;
export const VIRTIO_BLK_DISCARD_SEG_SIZE = 16;
