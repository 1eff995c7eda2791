// The mission's first use: a vdx disk handed to a container as /dev/vdX. In the
// 6.12 guest a VDUSE export on virtio_vdpa goes to podman (crun underneath) with
// --device; what the container writes is read back through /dev/vdX and through
// vdx's bdev over vhost_vdpa (libblkio). A second device, made at run time over
// JSON-RPC as an orchestrator would, goes to a second container and is deleted.
import { afterEach, describe, expect, test } from 'vitest';
import { expectGuestOk, killTracked, recordTiming, runGuest } from './vm.js';

afterEach(() => killTracked());

describe('vdx disks in containers', () => {
  test('podman run --device /dev/vdX: the container writes, vdx holds the bytes; a second disk made over RPC for a second container', async () => {
    const r = await runGuest({ name: 'vdx-container', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/vdx-container.sh"', timeoutMs: 420_000 });
    recordTiming('vdx-container', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toMatch(/podman version [\d.]+ with crun, storage \w+, cgroups v2/);
    expect(r.output).toMatch(/container 1 gets \/dev\/vd[a-z]+ as \/dev\/disk0/);
    expect(r.output).toMatch(/ct0 moved to \/dev\/vhost-vdpa-\d+ over RPC; libblkio read the container's bytes from vdx's bdev/);
    expect(r.output).toMatch(/vduse_create_blk_device ct1 gave \/dev\/vd[a-z]+/);
    expect(r.output).toMatch(/ct1 moved to \/dev\/vhost-vdpa-\d+ over RPC; libblkio read the container's bytes from vdx's bdev/);
    expect(r.output).toContain('vduse_delete_device ct1');
    expect(r.output).toMatch(/ct0 still holds container 1's bytes at \/dev\/vd[a-z]+/);
    expect(r.output).toContain('VDX-CONTAINER-OK');
  }, 480_000);
});
