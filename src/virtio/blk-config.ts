// virtio-blk feature selection and config space (virtio 1.2 §5.2.4), shared by
// every frontend.
import type { BdevInfo } from '../bdev/types.js';
import type { BlkParams } from './blk.js';
import {
  VIRTIO_BLK_F_BLK_SIZE_BIT,
  VIRTIO_BLK_F_DISCARD_BIT,
  VIRTIO_BLK_F_FLUSH_BIT,
  VIRTIO_BLK_F_MQ_BIT,
  VIRTIO_BLK_F_RO_BIT,
  VIRTIO_BLK_F_SEG_MAX_BIT,
  VIRTIO_BLK_F_TOPOLOGY_BIT,
  VIRTIO_BLK_F_WRITE_ZEROES_BIT,
  VIRTIO_F_VERSION_1_BIT,
  VIRTIO_RING_F_EVENT_IDX_BIT,
  VIRTIO_RING_F_INDIRECT_DESC_BIT,
  bit,
} from './constants.js';
import { MAX_IOV } from '../bdev/types.js';

/** struct virtio_blk_config through unused1 (QEMU 7.2 and libblkio read 60 bytes). */
export const BLK_CONFIG_SIZE = 60;

export interface BlkExportOptions {
  numQueues: number;
  queueSize: number;
  readonly: boolean;
  serial: string;
  /** logical block size the guest sees; default the bdev's */
  logicalBlockSize?: number;
}

/** Sectors per DISCARD / WRITE_ZEROES segment we accept; segments per request. */
const MAX_RANGE_SECTORS = 1 << 21; // 1 GiB
const MAX_RANGE_SEGS = 16;

export function blkParams(info: BdevInfo, o: BlkExportOptions): BlkParams {
  const maxSectors = Math.min(MAX_RANGE_SECTORS, Math.floor(info.maxDiscardBytes / 512));
  const blockSize = o.logicalBlockSize ?? info.blockSize;
  if (blockSize < info.blockSize || blockSize % info.blockSize !== 0) {
    throw new Error(`logical-block-size=${blockSize} is smaller than, or not a multiple of, bdev ${info.name}'s block size ${info.blockSize}`);
  }
  return {
    sizeBytes: info.sizeBytes - (info.sizeBytes % blockSize),
    blockSize,
    readonly: o.readonly || info.readonly,
    discard: info.caps.discard,
    writeZeroes: info.caps.writeZeroes,
    maxDiscardSectors: maxSectors,
    maxWriteZeroesSectors: maxSectors,
    maxDiscardSeg: MAX_RANGE_SEGS,
    maxWriteZeroesSeg: MAX_RANGE_SEGS,
    serial: o.serial,
  };
}

/** Device features a virtio-blk export offers (transport bits are the frontend's business). */
export function blkFeatures(p: BlkParams, numQueues: number): bigint {
  let f =
    bit(VIRTIO_F_VERSION_1_BIT) |
    bit(VIRTIO_RING_F_INDIRECT_DESC_BIT) |
    bit(VIRTIO_RING_F_EVENT_IDX_BIT) |
    bit(VIRTIO_BLK_F_SEG_MAX_BIT) |
    bit(VIRTIO_BLK_F_BLK_SIZE_BIT) |
    bit(VIRTIO_BLK_F_TOPOLOGY_BIT) |
    bit(VIRTIO_BLK_F_FLUSH_BIT);
  if (numQueues > 1) f |= bit(VIRTIO_BLK_F_MQ_BIT);
  if (p.readonly) f |= bit(VIRTIO_BLK_F_RO_BIT);
  if (p.discard && !p.readonly) f |= bit(VIRTIO_BLK_F_DISCARD_BIT);
  if (p.writeZeroes && !p.readonly) f |= bit(VIRTIO_BLK_F_WRITE_ZEROES_BIT);
  return f;
}

/** The config space, little-endian, BLK_CONFIG_SIZE bytes. */
export function blkConfig(p: BlkParams, o: BlkExportOptions): Uint8Array {
  const b = new Uint8Array(BLK_CONFIG_SIZE);
  const v = new DataView(b.buffer);
  const sectors = p.sizeBytes / 512;
  v.setUint32(0, sectors % 2 ** 32, true); // capacity
  v.setUint32(4, Math.floor(sectors / 2 ** 32), true);
  v.setUint32(8, 0, true); // size_max: SIZE_MAX not offered
  // seg_max: the chain also carries header and status; the queue bounds a direct chain.
  v.setUint32(12, Math.min(MAX_IOV, o.queueSize - 2), true);
  v.setUint32(20, p.blockSize, true); // blk_size
  v.setUint8(24, 0); // physical_block_exp
  v.setUint8(25, 0); // alignment_offset
  v.setUint16(26, 1, true); // min_io_size (blocks)
  v.setUint32(28, 0, true); // opt_io_size
  v.setUint8(32, 0); // writeback: CONFIG_WCE not offered
  v.setUint16(34, o.numQueues, true);
  v.setUint32(36, p.maxDiscardSectors, true);
  v.setUint32(40, p.maxDiscardSeg, true);
  v.setUint32(44, p.blockSize / 512, true); // discard_sector_alignment
  v.setUint32(48, p.maxWriteZeroesSectors, true);
  v.setUint32(52, p.maxWriteZeroesSeg, true);
  v.setUint8(56, 1); // write_zeroes_may_unmap
  return b;
}
