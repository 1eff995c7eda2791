// The bench's checks, each parameterised by the exporter under test.
import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VduseExporter, VhostUserExporter } from './exporters.js';
import { type GuestResult, LOG_DIR, expectGuestOk, recordTiming, runGuest } from './vm.js';

const guestScript = (check: string) => `exec bash "$VDX_SRC/test/e2e/guest/checks/${check}.sh"`;

/** VDUSE in the guest: virtio_vdpa round trip, run-time switch to vhost_vdpa + libblkio, and back. */
export async function vduseCheck(exporter: VduseExporter, queues = 2): Promise<GuestResult> {
  const r = await runGuest({
    name: `vduse-${exporter}`,
    script: guestScript('vduse'),
    env: { EXPORTER: exporter, QUEUES: String(queues) },
  });
  recordTiming(`vduse-${exporter}`, r.durationMs);
  expectGuestOk(r);
  return r;
}

/** vhost-user on the host: a QEMU 7.2 guest with vhost-user-blk-pci does the filesystem round trip. */
export async function vhostUserCheck(exporter: VhostUserExporter, queues = 2): Promise<GuestResult> {
  mkdirSync(LOG_DIR, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'vdx-vu-'));
  const socket = join(dir, 'vu.sock');
  const image = join(dir, 'disk.img');
  writeFileSync(image, '');
  truncateSync(image, 64 << 20);
  try {
    await exporter.start({ socket, image, queues });
    const r = await runGuest({
      name: `vhost-user-${exporter.name}`,
      script: guestScript('blk-guest'),
      env: { QUEUES: String(queues) },
      sharedMemory: true,
      qemuArgs: ['-chardev', `socket,id=vu0,path=${socket}`, '-device', `vhost-user-blk-pci,chardev=vu0,num-queues=${queues}`],
    });
    recordTiming(`vhost-user-${exporter.name}`, r.durationMs);
    expectGuestOk(r);
    return r;
  } finally {
    await exporter.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
