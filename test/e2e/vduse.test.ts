// vdx's VDUSE frontend on the real 6.12 kernel, with real clients: the guest
// kernel's virtio_blk (virtio_vdpa) and libblkio (vhost_vdpa).
import { afterEach, describe, expect, test } from 'vitest';
import { vduseCheck } from './checks.js';
import { join } from 'node:path';
import { REPO, expectGuestOk, killTracked, recordTiming, run, runGuest } from './vm.js';

afterEach(() => killTracked());

describe('vdx over VDUSE', () => {
  test('the bench VDUSE check with vdx in place of qemu-storage-daemon', async () => {
    const r = await vduseCheck('vdx-vduse', 2);
    expect(r.output).toContain('libblkio read the same bytes');
    expect(r.output).toContain('VDUSE-CHECK-OK');
  });

  test('malloc and file bdevs on virtio_vdpa; three run-time round trips through vhost_vdpa with libblkio', async () => {
    const r = await runGuest({ name: 'vdx-vduse', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/vdx-vduse.sh"', timeoutMs: 300_000 });
    recordTiming('vdx-vduse', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('FIO-VERIFY-OK');
    expect(r.output).toMatch(/round 3: guest sees pattern 36/);
    expect(r.output).toContain('VDX-VDUSE-OK');
  });

  test('packed virtqueues (packed=on) on virtio_vdpa: fs, fio verify, two queues; through vhost_vdpa with libblkio and back', async () => {
    const r = await runGuest({ name: 'vdx-vduse-packed', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/vdx-vduse-packed.sh"', timeoutMs: 300_000 });
    recordTiming('vdx-vduse-packed', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('packed virtqueues negotiated');
    expect(r.output).toContain('packed VDUSE round trip ok');
  });
});

describe('vdx over VDUSE: crypt', () => {
  test('ext4 written through a crypt bdev opens with the guest\'s dm-crypt (cryptsetup plain, aes-xts-plain64), and a dm-crypt volume reads through vdx; iv-large-sectors matches cryptsetup --iv-large-sectors', async () => {
    const r = await runGuest({ name: 'vdx-crypt-vduse', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/crypt-vduse.sh"', timeoutMs: 300_000 });
    recordTiming('vdx-crypt-vduse', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('DM-CRYPT-READS-VDX-OK');
    expect(r.output).toContain('VDX-READS-DM-CRYPT-OK');
    expect(r.output).toContain('IV-LARGE-SECTORS-OK');
  });
});

describe('vdx over VDUSE: restart', () => {
  test('SIGKILLed three times and stopped for an upgrade once under fio: /dev/vdX keeps its major:minor and open file, libblkio on vhost_vdpa keeps its data; mismatched or foreign devices refused', async () => {
    const r = await runGuest({ name: 'vdx-vduse-restart', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/vdx-vduse-restart.sh"', timeoutMs: 420_000 });
    recordTiming('vdx-vduse-restart', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toMatch(/fio: read \d+ KiB, wrote \d+ KiB, errors 0/);
    expect(r.output).toContain('libblkio on /dev/vhost-vdpa-0 wrote before a kill and read it back after');
    expect(r.output).toContain('VDUSE-RESTART-OK');
    process.stderr.write(`vduse restart: ${r.output.split('\n').filter((l) => /(kill|upgrade) \d: vdx serving again|^fio:|ran again|waited|note:/.test(l)).join('; ')}\n`);
  }, 480_000);
});

describe('vdx over VDUSE, managed over JSON-RPC', () => {
  test('devices created, bound, listed and deleted over RPC while another device serves fio', async () => {
    const r = await runGuest({ name: 'vdx-vduse-rpc', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/vdx-vduse-rpc.sh"', timeoutMs: 300_000 });
    recordTiming('vdx-vduse-rpc', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('back on virtio_vdpa');
    expect(r.output).toContain('VDX-VDUSE-RPC-OK');
  });
});

describe('vdx over VDUSE: bad requests', () => {
  test('duplicate names, missing devices, switching an open device: clear errors, vdx keeps serving', async () => {
    const r = await runGuest({ name: 'vdx-vduse-negative', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/vdx-vduse-negative.sh"' });
    recordTiming('vdx-vduse-negative', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('VDX-VDUSE-NEGATIVE-OK');
  });

  test('without the vduse module (this host): a one-line error that says what to load', async () => {
    const r = await run(process.execPath, [join(REPO, 'dist/cli/main.js'), 'serve', '--bdev', 'null:name=n,size=1G', '--export', 'vduse:bdev=n', '--rpc-socket', 'none', '--log-format', 'json']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('/dev/vduse/control is missing: load the vduse and vdpa modules');
    expect(r.stderr).toContain('needs Linux >= 5.15, driver_override >= 5.17');
    const m = await run(process.execPath, [join(REPO, 'dist/cli/main.js'), 'vdpa', 'mgmtdev']);
    expect(m.code).toBe(1);
    expect(m.stderr).toContain('no vdpa generic netlink family: load the vduse and vdpa modules');
  });
});

describe('vdx over VDUSE: a VM on vhost_vdpa', () => {
  test('a nested QEMU with vhost-vdpa-device-pci (default 1024-entry rings) boots and reads the data', async () => {
    const r = await runGuest({ name: 'vdx-vduse-vm', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/vdx-vduse-vm.sh"', memMiB: 3072, timeoutMs: 600_000 });
    recordTiming('vdx-vduse-vm', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('VDX-VDUSE-VM-OK');
  }, 660_000);
});

describe('README Quick start', () => {
  test("'npm start' serves the embedded default over vhost-user and VDUSE", async () => {
    const r = await runGuest({ name: 'quick-start', script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/quick-start.sh"' });
    recordTiming('quick-start', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('QUICK-START-OK');
  });
});
