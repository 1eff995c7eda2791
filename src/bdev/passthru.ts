// passthru bdev: forwards every I/O to its base unchanged, as SPDK's passthru
// module does. It is the smallest layer, and so the template for writing one:
// name the base in baseKeys, keep the base's description in desc.bases, open
// the base's channel through the reactor's context, and forward.
import { ForwardChannel, layerSpec, windowInfo } from './layer.js';
import type { BdevDesc, BdevModule, Channel, ChannelContext } from './types.js';

export const passthruBdev: BdevModule = {
  type: 'passthru',
  keys: {
    name: 'bdev name (required)',
    base: 'the bdev it forwards to (required); claimed for writing while the passthru exists',
  },
  baseKeys: ['base'],
  normalize: (spec) => layerSpec('passthru', spec, passthruBdev.keys),
  create(spec, bases): BdevDesc {
    const base = bases[0]!;
    return { info: windowInfo(spec.name!, 'passthru', base, base.info.sizeBytes), params: {}, bases: [base] };
  },
  open(desc: BdevDesc, ctx: ChannelContext): Channel {
    const base = desc.bases![0]!;
    return new ForwardChannel(ctx.openBase(base), base, ctx, 0, desc.info.sizeBytes);
  },
  describe: (desc) => ({ productName: 'passthru', driverSpecific: { passthru: { name: desc.info.name, base_bdev_name: desc.bases![0]!.info.name } } }),
  destroy(): void {},
};
