// split bdev: a base cut into `count` parts of equal size (or of `size` each),
// named <base>p0, <base>p1, ... as SPDK's bdev_split_create names them. Each
// part is a bdev of its own, a window of the base: I/O past a part's end is
// refused, never sent to the neighbour. The parts claim their base together,
// once; they are created and deleted together (bdev_split_create/_delete).
import { ForwardChannel, windowInfo } from './layer.js';
import { checkKeys, parseSize } from './spec.js';
import type { BdevDesc, BdevModule, Channel, ChannelContext } from './types.js';

export const MAX_SPLIT_PARTS = 1024;

/** The keys a user gives: one spec for all the parts. */
const GROUP_KEYS = {
  base: 'the bdev to cut (required); claimed for writing while the parts exist',
  count: `number of parts, 1..${MAX_SPLIT_PARTS} (required)`,
  size: 'size of each part, e.g. 256M (default: the base divided by count, rounded down to whole blocks)',
};
/** A part's own spec, as expand() makes it (and save_config's replay makes it again). */
const PART_KEYS = { ...GROUP_KEYS, name: 'part name: <base>p<index>', index: 'the part, 0..count-1' };

function parseCount(v: string | undefined): number {
  if (v === undefined || !/^\d+$/.test(v) || Number(v) < 1 || Number(v) > MAX_SPLIT_PARTS) {
    throw new Error(`split: count=${v ?? ''} must be a whole number of parts in 1..${MAX_SPLIT_PARTS}`);
  }
  return Number(v);
}

/** Bytes per part: the given size, or the base shared out in whole blocks. */
function partBytes(spec: Record<string, string>, base: BdevDesc): number {
  const count = parseCount(spec.count);
  const bs = base.info.blockSize;
  const given = spec.size === undefined || spec.size === '0' ? 0 : parseSize('size', spec.size, bs);
  const each = given || Math.floor(base.info.sizeBytes / bs / count) * bs;
  if (each === 0) throw new Error(`split: ${base.info.name} (${base.info.sizeBytes} bytes) is too small for ${count} parts of at least one ${bs}-byte block`);
  if (each * count > base.info.sizeBytes) {
    throw new Error(`split: ${count} parts of ${each} bytes need ${each * count} bytes; ${base.info.name} has ${base.info.sizeBytes} (fewer parts, or a smaller size=)`);
  }
  return each;
}

export const splitBdev: BdevModule = {
  type: 'split',
  keys: GROUP_KEYS,
  baseKeys: ['base'],
  names(spec) {
    const count = parseCount(spec.count);
    return Array.from({ length: count }, (_, i) => `${spec.base}p${i}`);
  },
  expand(all, bases) {
    // A split is known by its first part: bdev_create may name it so.
    const { name, ...spec } = all;
    if (name !== undefined && name !== `${spec.base}p0`) throw new Error(`split: its parts are named ${spec.base}p0, ${spec.base}p1, ...; name=${name} cannot be one of them (leave name out)`);
    checkKeys('split', spec, GROUP_KEYS, ['base', 'count']);
    const base = bases[0]!;
    const count = parseCount(spec.count);
    partBytes(spec, base); // refuse a split that does not fit before any part exists
    const size = spec.size === undefined || spec.size === '0' ? '0' : String(parseSize('size', spec.size, base.info.blockSize));
    return Array.from({ length: count }, (_, i) => ({ name: `${spec.base}p${i}`, base: spec.base!, count: String(count), size, index: String(i) }));
  },
  normalize(spec) {
    checkKeys('split', spec, PART_KEYS, ['name', 'base', 'count', 'index']);
    const count = parseCount(spec.count);
    const index = spec.index!;
    if (!/^\d+$/.test(index) || Number(index) >= count) throw new Error(`split: index=${index} must be a part number in 0..${count - 1}`);
    if (spec.name !== `${spec.base}p${index}`) throw new Error(`split: part ${index} of ${spec.base} is named ${spec.base}p${index}, not ${spec.name}`);
    const size = spec.size === undefined || spec.size === '0' ? '0' : String(parseSize('size', spec.size, 512));
    return { name: spec.name, base: spec.base!, count: String(count), size, index };
  },
  create(spec, bases): BdevDesc {
    const base = bases[0]!;
    const each = partBytes(spec, base);
    const offset = Number(spec.index) * each;
    return { info: windowInfo(spec.name!, 'split', base, each), params: { offsetBytes: offset }, bases: [base] };
  },
  open(desc: BdevDesc, ctx: ChannelContext): Channel {
    const base = desc.bases![0]!;
    return new ForwardChannel(ctx.openBase(base), base, ctx, desc.params.offsetBytes as number, desc.info.sizeBytes);
  },
  describe: (desc) => ({
    productName: 'Split Disk',
    driverSpecific: { split: { base_bdev: desc.bases![0]!.info.name, offset_blocks: (desc.params.offsetBytes as number) / desc.info.blockSize } },
  }),
  destroy(): void {},
};
