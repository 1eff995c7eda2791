// The rbd bdev behind VDUSE on the 6.12 kernel, with the Ceph cluster inside
// the guest too: /dev/vdX for the guest kernel, then /dev/vhost-vdpa-N for
// libblkio after a run-time switch, the data carried across.
import { afterEach, describe, expect, test } from 'vitest';
import { expectGuestOk, killTracked, recordTiming, runGuest } from './vm.js';

afterEach(() => killTracked());

describe('rbd bdev over VDUSE, cluster in the guest', () => {
  test('rbd import reads back, fs round trip on /dev/vdX, a foreign rbd resize reaches the driver, libblkio on vhost_vdpa, rbd export sees it', async () => {
    const r = await runGuest({ name: 'vdx-rbd-vduse', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/rbd-vduse.sh"', timeoutMs: 600_000 });
    recordTiming('vdx-rbd-vduse', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('reads the imported image');
    expect(r.output).toContain('files verified on');
    expect(r.output).toContain('grew to 96 MiB');
    expect(r.output).toContain('libblkio read the same data through vhost_vdpa');
    expect(r.output).toContain('RBD-VDUSE-OK');
  });
});
