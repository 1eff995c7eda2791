// Binding vdpa devices to a bus driver through sysfs (driver_override, Linux
// >= 5.17): virtio_vdpa makes a kernel virtio device (/dev/vdX for blk),
// vhost_vdpa a /dev/vhost-vdpa-N for VMs and libblkio.
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';

export type VdpaBus = 'virtio' | 'vhost';
export const BUS_DRIVER: Record<VdpaBus, string> = { virtio: 'virtio_vdpa', vhost: 'vhost_vdpa' };

const SYS = '/sys/bus/vdpa';

export function deviceExists(name: string): boolean {
  return existsSync(`${SYS}/devices/${name}`);
}

/** The driver a device is bound to, if any. */
export function boundDriver(name: string): string | undefined {
  try {
    return basename(readlinkSync(`${SYS}/devices/${name}/driver`));
  } catch {
    return undefined;
  }
}

export function busOf(driver: string | undefined): VdpaBus | 'none' {
  return driver === 'virtio_vdpa' ? 'virtio' : driver === 'vhost_vdpa' ? 'vhost' : 'none';
}

/** The node a bound device shows on the host: /dev/vdX or /dev/vhost-vdpa-N. */
export function deviceNode(name: string): string | undefined {
  const d = `${SYS}/devices/${name}`;
  try {
    for (const e of readdirSync(d)) {
      if (e.startsWith('vhost-vdpa-')) return `/dev/${e}`;
      if (e.startsWith('virtio')) {
        const blk = `${d}/${e}/block`;
        if (existsSync(blk)) {
          const disks = readdirSync(blk);
          if (disks[0]) return `/dev/${disks[0]}`;
        }
      }
    }
  } catch {
    // not on the bus
  }
  return undefined;
}

/** Why the device's node cannot be taken away now, or undefined when it is free. */
export function nodeInUse(node: string): string | undefined {
  const dev = basename(node);
  // Never probe by opening: opening /dev/vhost-vdpa-N resets the device, which
  // asks the VDUSE daemon a question and waits for the answer.
  if (readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[0] === node || l.startsWith(`${node}p`))) {
    return `${node} is mounted`;
  }
  try {
    const holders = readdirSync(`/sys/block/${dev}/holders`);
    if (holders.length) return `${node} is held by ${holders.join(', ')}`;
  } catch {
    // no such disk
  }
  // Any process with the node open (what fuser reports).
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === node) return `${node} is open by process ${pid}`;
      } catch {
        // raced with close
      }
    }
  }
  return undefined;
}

/**
 * Unbinding and probing make the kernel talk to the VDUSE daemon and wait for
 * its answers, so these writes must never run on the thread that answers
 * (see ops-worker.ts).
 *
 * Move a device to `bus` at run time: unbind, set driver_override, probe. Refuses
 * while the current node is in use. Resolves with the new node.
 */
export async function bindBus(name: string, bus: VdpaBus, timeoutMs = 15_000): Promise<string> {
  if (!deviceExists(name)) throw new Error(`no vdpa device '${name}'`);
  if (!existsSync(`${SYS}/drivers/${BUS_DRIVER[bus]}`)) throw new Error(`driver ${BUS_DRIVER[bus]} is not loaded (modprobe ${BUS_DRIVER[bus]})`);
  const cur = boundDriver(name);
  const want = BUS_DRIVER[bus];
  if (cur !== want) {
    const node = deviceNode(name);
    if (node) {
      const busy = nodeInUse(node);
      if (busy) throw new Error(`cannot move ${name} to ${bus}: ${busy}`);
    }
    if (cur) writeFileSync(`${SYS}/drivers/${cur}/unbind`, name);
    writeFileSync(`${SYS}/devices/${name}/driver_override`, want);
    writeFileSync(`${SYS}/drivers_probe`, name);
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const node = boundDriver(name) === want ? deviceNode(name) : undefined;
    if (node && existsSync(node)) return node;
    if (Date.now() > deadline) throw new Error(`${name} did not appear on ${bus} (bound to ${boundDriver(name) ?? 'nothing'})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
