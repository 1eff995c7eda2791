// The mirror's methods, with SPDK's names and parameters (module/bdev/raid/bdev_raid_rpc.c).
// vdx has raid1 only; a member that failed stays in its slot, and
// bdev_raid_add_base_bdev puts it back with a rebuild.
import type { BdevSpec } from '../../control/bdevs.js';
import { MAX_MEMBERS, raidAddMember, raidRemoveMember, raidStatus } from '../../bdev/raid1.js';
import { ControlError, ENODEV } from '../../control/errors.js';
import { invalidParams } from '../errors.js';
import { method, type Method } from '../method.js';
import { bool, nameList, nonEmpty, oneOf, str, u32 } from '../schema.js';
import { createBdev, deleteMethod } from './bdev.js';
import type { RpcContext } from './context.js';

/** The raid bdev of that name: refused, naming what it is, if it is not one. */
function raidEntry(ctx: RpcContext, name: string) {
  const e = ctx.bdevs.get(name);
  if (e.spec.type !== 'raid1') throw new ControlError(ENODEV, `bdev '${name}' is a ${e.spec.type} bdev, not a raid bdev`);
  return e;
}

/** The raid1 bdev that has `member` among its members. */
function raidOf(ctx: RpcContext, member: string) {
  ctx.bdevs.get(member);
  const e = ctx.bdevs.list().find((x) => x.spec.type === 'raid1' && x.bases.includes(member));
  if (!e) throw new ControlError(ENODEV, `bdev '${member}' is not a member of any raid bdev`);
  return e;
}

function listed(e: ReturnType<typeof raidEntry>) {
  return { name: e.desc.info.name, uuid: e.uuid, ...raidStatus(e.desc) };
}

function refused(err: unknown): never {
  throw new ControlError(-22, (err as Error).message);
}

export const raidMethods: Record<string, Method<RpcContext>> = {
  bdev_raid_create: method(
    `create a raid1 mirror of 2..${MAX_MEMBERS} base bdevs (its size is the smallest member's)`,
    {
      name: nonEmpty.describe('name of the raid bdev'),
      raid_level: oneOf('raid1', '1', 'raid0', '0', 'concat').describe('raid1 (vdx has no raid0 or concat)'),
      base_bdevs: nameList.where(`an array of 2..${MAX_MEMBERS} bdev names (none containing '+')`, (v) => v.length >= 2 && v.length <= MAX_MEMBERS && v.every((x) => !x.includes('+'))).describe('the member bdevs'),
      strip_size_kb: u32.optional().describe('not used by raid1 (0 or left out)'),
      uuid: str.optional(),
      superblock: bool.optional().describe('false: vdx keeps the raid in its saved configuration, not on the members'),
    },
    async (p, ctx) => {
      if (p.raid_level !== 'raid1' && p.raid_level !== '1') throw invalidParams(`raid_level=${p.raid_level}: vdx mirrors (raid1); it has no raid0 or concat`);
      if (p.strip_size_kb) throw invalidParams(`strip_size_kb=${p.strip_size_kb}: a mirror has no strips; leave it out (or 0)`);
      if (p.superblock) throw invalidParams('superblock=true: vdx writes no raid superblock on the members; its saved configuration (save_config) brings the mirror back');
      const spec: BdevSpec = { type: 'raid1', name: p.name, members: p.base_bdevs.join('+') };
      if (p.uuid !== undefined) spec.uuid = p.uuid;
      return (await createBdev(ctx, spec, 'bdev_raid_create')).desc.info.name;
    },
  ),
  bdev_raid_delete: deleteMethod('raid1', 'raid'),
  bdev_raid_get_bdevs: method(
    'list raid bdevs with their members\' states and a rebuild\'s progress',
    { category: oneOf('all', 'online', 'configuring', 'offline').optional().describe('which to list (default all)') },
    (p, ctx) =>
      ctx.bdevs
        .list()
        .filter((e) => e.spec.type === 'raid1')
        .map(listed)
        .filter((r) => !p.category || p.category === 'all' || r.state === p.category),
  ),
  bdev_raid_add_base_bdev: method(
    'put a failed member back into its mirror: it is rebuilt in the background while I/O goes on',
    { raid_bdev: nonEmpty.describe('the raid bdev'), base_bdev: nonEmpty.describe('its failed member') },
    async (p, ctx) => {
      const e = raidEntry(ctx, p.raid_bdev);
      try {
        raidAddMember(e.desc, p.base_bdev);
      } catch (err) {
        refused(err);
      }
      // A sleeping reactor would start the rebuild only at its next I/O.
      await Promise.all(ctx.pool.reactors.map((r) => r.settingsChanged(p.raid_bdev)));
      return true;
    },
  ),
  bdev_raid_remove_base_bdev: method(
    'take a member out of its mirror\'s service (it is failed and keeps its slot; bdev_raid_add_base_bdev puts it back)',
    { name: nonEmpty.describe('the member bdev') },
    (p, ctx) => {
      const e = raidOf(ctx, p.name);
      try {
        raidRemoveMember(e.desc, p.name);
      } catch (err) {
        refused(err);
      }
      return true;
    },
  ),
};
