// The reference peer (qemu-storage-daemon) through the bench's checks: proves the
// bench and the checks before vdx faces them.
import { afterEach, describe, expect, test } from 'vitest';
import { vduseCheck, vhostUserCheck } from './checks.js';
import { QsdVhostUser } from './exporters.js';
import { killTracked } from './vm.js';

afterEach(() => killTracked());

describe('reference peer: qemu-storage-daemon', () => {
  test('VDUSE: virtio_vdpa round trip, switch to vhost_vdpa + libblkio, and back', async () => {
    const r = await vduseCheck('qsd-vduse', 2);
    expect(r.output).toContain('libblkio read the same bytes');
    expect(r.output).toContain('VDUSE-CHECK-OK');
  });

  test('vhost-user: QEMU guest with vhost-user-blk-pci, two queues', async () => {
    const r = await vhostUserCheck(new QsdVhostUser(), 2);
    expect(r.output).toContain('has 2 queues');
    expect(r.output).toContain('BLK-CHECK-OK');
  });
});
