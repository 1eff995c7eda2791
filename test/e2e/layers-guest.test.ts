// Layered bdevs under a QEMU guest (vhost-user), in one boot: a raid1 mirror
// of two file bdevs keeps a fio verify clean while one member fails (an error
// bdev under it fails its writes), is added back and rebuilt, after which both
// files are identical; a QoS limit measured by the guest's fio, then raised
// at run time; the example user module (contrib/bdev-modules/crc.mjs)
// carrying an ext4 round trip.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { rpcCall } from '../../src/rpc/client.js';
import { LOG_DIR, REPO, exited, expectGuestOk, killTracked, recordTiming, runGuest, spawnTracked, waitForPath } from './vm.js';

afterEach(() => killTracked());

const MiB = 1 << 20;
const QOS_1 = 2000;
const QOS_2 = 4000;

let dir = '';
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vdx-layers-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

function image(name: string, sizeBytes: number): string {
  const p = join(dir, name);
  writeFileSync(p, '');
  truncateSync(p, sizeBytes);
  return p;
}

async function until<T>(what: string, f: () => Promise<T | undefined>, timeoutMs: number, guestExited: AbortSignal): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (guestExited.aborted) throw new Error(`guest exited while waiting for ${what}`);
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface RaidListing {
  name: string;
  state: string;
  base_bdevs_list: { name: string; state: string }[];
  process?: { target: string; progress: { percent: number } };
}

describe('layered bdevs in a QEMU guest', () => {
  test('raid1: a member fails under fio verify, is added back and rebuilt while fio goes on, both files end identical; QoS holds 2000 IOPS, then 4000; the example crc module carries ext4', async () => {
    const [a, b] = [image('m0.img', 128 * MiB), image('m1.img', 128 * MiB)];
    const rpc = join(dir, 'rpc.sock');
    const socks = ['r0', 'c0', 'q0'].map((n) => join(dir, `${n}.sock`));
    mkdirSync(LOG_DIR, { recursive: true });
    const logPath = join(LOG_DIR, 'vdx-layers-guest.log');
    const vdx = spawnTracked(process.execPath, [
      // Its own state dir: the mirror's record of out-of-step members (raid1-r0.json) goes with the test's files.
      join(REPO, 'dist/cli/main.js'), 'serve', '--log-format', 'json', '--rpc-socket', rpc, '--state-dir', join(dir, 'state'),
      '--bdev-module', join(REPO, 'contrib/bdev-modules/crc.mjs'),
      '--bdev', `file:name=f0,path=${a}`, '--bdev', `file:name=f1,path=${b}`, '--bdev', 'error:name=EE_f1,base=f1',
      '--bdev', 'raid1:name=r0,members=f0+EE_f1',
      '--bdev', 'malloc:name=m0,size=64M', '--bdev', 'crc:name=c0,base=m0',
      '--bdev', `null:name=q0,size=64M,rw-ios-per-sec=${QOS_1}`,
      '--export', `vhost-user:bdev=r0,socket=${socks[0]}`,
      '--export', `vhost-user:bdev=c0,socket=${socks[1]}`,
      '--export', `vhost-user:bdev=q0,socket=${socks[2]}`,
    ]);
    const log = createWriteStream(logPath);
    vdx.stderr?.pipe(log);
    for (const s of socks) await waitForPath(s, vdx, 'vdx');

    const raid = async () => ((await rpcCall(rpc, 'bdev_raid_get_bdevs', { category: 'all' })) as RaidListing[])[0]!;
    const memberState = async (m: string) => (await raid()).base_bdevs_list.find((x) => x.name === m)!.state;
    const passes = (runDir: string) => {
      let n = 0;
      while (existsSync(join(runDir, `raid-pass-${n + 1}`))) n++;
      return n;
    };
    const seen: { percents: number[]; passesAtRebuild: number; passesAfter: number; listedWhileFailed?: RaidListing } = { percents: [], passesAtRebuild: 0, passesAfter: 0 };
    let r;
    try {
      r = await runGuest({
        name: 'vdx-layers-guest',
        script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/layers-guest.sh"',
        sharedMemory: true,
        timeoutMs: 300_000,
        qemuArgs: socks.flatMap((s, i) => ['-chardev', `socket,id=vu${i},path=${s}`, '-device', `vhost-user-blk-pci,chardev=vu${i},num-queues=1`]),
        whileRunning: async (runDir, guestExited) => {
          await until('the guest asking for the higher QoS limit', async () => (existsSync(join(runDir, 'req-raise-qos')) ? true : undefined), 120_000, guestExited);
          await rpcCall(rpc, 'bdev_set_qos_limit', { name: 'q0', rw_ios_per_sec: QOS_2 });
          writeFileSync(join(runDir, 'ack-raise-qos'), '');

          // One clean pass on the whole mirror, then f1's side fails its writes.
          await until('a first fio pass on the mirror', async () => (passes(runDir) >= 1 ? true : undefined), 120_000, guestExited);
          await rpcCall(rpc, 'bdev_error_inject_error', { name: 'EE_f1', io_type: 'write', error_type: 'failure', num: 0 });
          await until('EE_f1 failed', async () => ((await memberState('EE_f1')) === 'failed' ? true : undefined), 30_000, guestExited);
          seen.listedWhileFailed = await raid();
          // A whole pass with one member, then it is healed and added back.
          const failedAt = passes(runDir);
          await until('a fio pass with one member', async () => (passes(runDir) >= failedAt + 2 ? true : undefined), 120_000, guestExited);
          await rpcCall(rpc, 'bdev_error_inject_error', { name: 'EE_f1', io_type: 'clear' });
          await rpcCall(rpc, 'bdev_raid_add_base_bdev', { raid_bdev: 'r0', base_bdev: 'EE_f1' });
          seen.passesAtRebuild = passes(runDir);
          await until('the rebuild of EE_f1', async () => {
            const l = await raid();
            if (l.process) seen.percents.push(l.process.progress.percent);
            return l.base_bdevs_list.every((m) => m.state === 'online') ? true : undefined;
          }, 120_000, guestExited);
          // Reads alternate between members: a pass after the rebuild verifies what EE_f1 holds too.
          const rebuiltAt = passes(runDir);
          await until('a fio pass on the rebuilt mirror', async () => (passes(runDir) >= rebuiltAt + 2 ? true : undefined), 120_000, guestExited);
          seen.passesAfter = passes(runDir);
          writeFileSync(join(runDir, 'raid-stop'), '');
        },
      });
    } finally {
      vdx.kill('SIGTERM');
      expect(await exited(vdx)).toBe(0);
      await new Promise<void>((res) => log.end(res));
    }
    recordTiming('vdx-layers-guest', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('CRC-FS-OK');
    expect(r.output).toContain('LAYERS-GUEST-OK');
    expect(r.output).not.toMatch(/RAID-FIO-FAILED/);

    // QoS: each figure within 10 % of its limit.
    const iops = [1, 2].map((k) => Number(r.output.match(new RegExp(`QOS-IOPS-${k} (\\d+)`))?.[1]));
    process.stderr.write(`layers guest: QoS ${QOS_1} -> ${iops[0]} IOPS, ${QOS_2} -> ${iops[1]} IOPS; rebuild progress seen ${seen.percents.join(',') || '(done between two looks)'} %; fio passes ${seen.passesAtRebuild} at the re-add, ${seen.passesAfter} at the end\n`);
    recordTiming('qos-iops-2000', iops[0]!);
    recordTiming('qos-iops-4000', iops[1]!);
    expect(Math.abs(iops[0]! - QOS_1) / QOS_1).toBeLessThan(0.1);
    expect(Math.abs(iops[1]! - QOS_2) / QOS_2).toBeLessThan(0.1);

    // raid1: listed as failed while it was, rebuilt in the background, with fio on either side of it.
    expect(seen.listedWhileFailed).toMatchObject({ name: 'r0', state: 'online', base_bdevs_list: [{ name: 'f0', state: 'online' }, { name: 'EE_f1', state: 'failed' }] });
    expect(seen.passesAfter).toBeGreaterThanOrEqual(seen.passesAtRebuild + 2);
    const text = readFileSync(logPath, 'utf8');
    expect(text).toMatch(/raid1 r0: member EE_f1 failed a write \(errno 5\); the mirror goes on from the others/);
    expect(text).toMatch(/raid1 r0: member EE_f1 rebuilt; it is online/);
    // Both members hold the same bytes.
    expect(Buffer.compare(readFileSync(a), readFileSync(b))).toBe(0);
  });
});
