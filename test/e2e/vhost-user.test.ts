// vdx's vhost-user-blk frontend against real clients: QEMU 7.2 guests on the
// 6.12 kernel, and libblkio from the Debian 13 userland.
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { vhostUserCheck } from './checks.js';
import { VdxVhostUser } from './exporters.js';
import { LOG_DIR, REPO, exited, expectGuestOk, killTracked, recordTiming, run, runGuest, runInUserland, spawnTracked, waitForPath } from './vm.js';

afterEach(() => killTracked());

const check = (name: string) => `exec bash "$VDX_SRC/test/e2e/guest/checks/${name}.sh"`;
const MiB = 1 << 20;

let dir = '';
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vdx-e2e-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

function image(sizeBytes: number, name = 'disk.img'): string {
  const p = join(dir, name);
  writeFileSync(p, '');
  truncateSync(p, sizeBytes);
  return p;
}

async function waitFile(path: string, guestExited: AbortSignal, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (guestExited.aborted) throw new Error(`guest exited before it wrote ${path}`);
    if (Date.now() > deadline) throw new Error(`guest never wrote ${path}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Boot a guest against a vdx export and run a guest check. */
async function guestOn(
  vdx: VdxVhostUser,
  queues: number,
  checkName: string,
  env: Record<string, string> = {},
  img = image(64 * MiB),
  deviceProps = '',
  whileRunning?: (runDir: string, guestExited: AbortSignal) => Promise<void>,
) {
  const socket = join(dir, 'vu.sock');
  await vdx.start({ socket, image: img, queues });
  try {
    const r = await runGuest({
      name: `vdx-${checkName}-${vdx.name}`,
      script: check(checkName),
      env: { QUEUES: String(queues), ...env },
      sharedMemory: true,
      qemuArgs: ['-chardev', `socket,id=vu0,path=${socket}`, '-device', `vhost-user-blk-pci,chardev=vu0,num-queues=${queues}${deviceProps}`],
      whileRunning,
    });
    recordTiming(`vdx-${checkName}-${vdx.name}`, r.durationMs);
    return expectGuestOk(r);
  } finally {
    await vdx.stop();
  }
}

describe('vdx over vhost-user, QEMU 7.2 guest', () => {
  test('malloc bdev: the bench check (fs round trip, two queues)', async () => {
    const r = await vhostUserCheck(new VdxVhostUser({ bdev: () => 'malloc:size=64M', logName: 'vdx-malloc' }), 2);
    expect(r.output).toContain('BLK-CHECK-OK');
  });

  test('malloc bdev: serial, fio --verify=crc32c', async () => {
    const vdx = new VdxVhostUser({ bdev: () => 'malloc:size=64M', exportKeys: 'serial=vdx-disk-0', logName: 'vdx-malloc-fio' });
    const r = await guestOn(vdx, 2, 'vdx-blk', { SERIAL: 'vdx-disk-0', FIO: '1' });
    expect(r.output).toContain("serial 'vdx-disk-0'");
    expect(r.output).toContain('FIO-VERIFY-OK');
  });

  test('file bdev (io_uring): fs round trip, serial, fio --verify=crc32c, two queues; `vdx resize` reaches the running guest', async () => {
    const rpc = join(dir, 'rpc.sock');
    const img = image(64 * MiB);
    const vdx = new VdxVhostUser({ exportKeys: 'serial=file0', logName: 'vdx-file', rpcSocket: rpc });
    let resize = { code: null as number | null, stdout: '', stderr: '' };
    const r = await guestOn(vdx, 2, 'vdx-blk', { SERIAL: 'file0', FIO: '1', RESIZE_MIB: '96' }, img, '', async (runDir, guestExited) => {
      await waitFile(join(runDir, 'ready-for-resize'), guestExited, 400_000);
      resize = await run(process.execPath, [join(REPO, 'dist/cli/main.js'), 'resize', 'd0', '96M', '--rpc-socket', rpc], { timeoutMs: 60_000 });
      writeFileSync(join(runDir, 'resized'), '');
    });
    expect(r.output).toContain('has 2 queues');
    expect(r.output).toContain('FIO-VERIFY-OK');
    expect(resize.stdout).toBe(`d0: ${96 * MiB} bytes\n`);
    expect(resize.code).toBe(0);
    expect(statSync(img).size).toBe(96 * MiB);
    // The guest saw the new size (within 20 s) and used the space past the old end.
    expect(r.output).toContain('RESIZE-SEEN-OK');
    const seen = /new size seen ([\d.]+) s after/.exec(r.output);
    if (seen) recordTiming('vdx-vhost-user-resize-seen-ms', Math.round(Number(seen[1]) * 1000));
    const log = readFileSync(vdx.logPath, 'utf8');
    expect(log).toContain('back-end request channel open');
    expect(log).toContain('config change sent to the front-end');
    expect(log).not.toMatch(/dropping the channel/);
  });

  test('packed virtqueues (packed=on): fs round trip, fio verify, two queues', async () => {
    const vdx = new VdxVhostUser({ bdev: () => 'malloc:size=64M', logName: 'vdx-packed' });
    const r = await guestOn(vdx, 2, 'vdx-blk', { FIO: '1', PACKED: '1' }, image(64 * MiB), ',packed=on');
    expect(r.output).toContain('packed virtqueues negotiated');
    expect(r.output).toContain('FIO-VERIFY-OK');
    expect(r.output).toContain('VDX-BLK-OK');
  });

  test('packed virtqueues on two reactors, file bdev', async () => {
    const vdx = new VdxVhostUser({ reactors: 2, extraArgs: ['--cpumask', '0x3'], logName: 'vdx-packed-2r' });
    const r = await guestOn(vdx, 2, 'vdx-blk', { FIO: '1', PACKED: '1' }, image(64 * MiB), ',packed=on');
    expect(r.output).toContain('packed virtqueues negotiated');
    expect(r.output).toContain('FIO-VERIFY-OK');
  });

  test('two reactors pinned to both CPUs: the two queues run on different reactors; fio verify', async () => {
    const vdx = new VdxVhostUser({ bdev: () => 'malloc:size=64M', reactors: 2, extraArgs: ['--cpumask', '0x3'], logName: 'vdx-2reactors' });
    const r = await guestOn(vdx, 2, 'vdx-blk', { FIO: '1' });
    expect(r.output).toContain('FIO-VERIFY-OK');
    const started = readFileSync(vdx.logPath, 'utf8')
      .split('\n')
      .filter((l) => l.includes('queue started'))
      .map((l) => JSON.parse(l) as { queue: number; reactor: number });
    const last = new Map(started.map((q) => [q.queue, q.reactor]));
    expect(new Set(last.values()).size).toBe(2);
  });

  test('file bdev split in 4, each part exported, on two reactors: fio verify on two parts at once; the other parts stay untouched', async () => {
    const img = image(64 * MiB);
    const PART = 16 * MiB;
    const sockets = [0, 1, 2, 3].map((i) => join(dir, `p${i}.sock`));
    mkdirSync(LOG_DIR, { recursive: true });
    const logPath = join(LOG_DIR, 'vdx-split.log');
    const vdx = spawnTracked(process.execPath, [
      join(REPO, 'dist/cli/main.js'), 'serve', '--reactors', '2', '--cpumask', '0x3',
      '--bdev', `file:name=f0,path=${img}`, '--bdev', 'split:base=f0,count=4',
      ...sockets.flatMap((sock, i) => ['--export', `vhost-user:bdev=f0p${i},socket=${sock},num-queues=2`]),
      '--rpc-socket', 'none', '--log-format', 'json',
    ]);
    const log = createWriteStream(logPath);
    vdx.stderr?.pipe(log);
    for (const sock of sockets) await waitForPath(sock, vdx, 'vdx');
    try {
      const r = await runGuest({
        name: 'vdx-split',
        script: [
          '. "$VDX_SRC/test/e2e/guest/lib.sh"',
          'for d in vda vdb vdc vdd; do wait_until 20 test -b /dev/$d || fail "no /dev/$d"; done',
          `for d in vda vdb vdc vdd; do [ "$(cat /sys/block/$d/size)" = ${PART / 512} ] || fail "/dev/$d has $(cat /sys/block/$d/size) sectors, not ${PART / 512}"; done`,
          '# vdb and vdc are parts 1 and 2 (devices in order)',
          'FIO_SIZE=12M BLK_DEV=vdb bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh" >/tmp/fio-a.log 2>&1 & A=$!',
          'FIO_SIZE=12M BLK_DEV=vdc bash "$VDX_SRC/test/e2e/guest/checks/fio-verify.sh" >/tmp/fio-b.log 2>&1 & B=$!',
          'wait $A || { cat /tmp/fio-a.log; fail "fio verify on vdb (f0p1)"; }',
          'wait $B || { cat /tmp/fio-b.log; fail "fio verify on vdc (f0p2)"; }',
          'cat /tmp/fio-a.log /tmp/fio-b.log',
          'echo SPLIT-FIO-OK',
        ].join('\n'),
        sharedMemory: true,
        qemuArgs: sockets.flatMap((sock, i) => ['-chardev', `socket,id=vu${i},path=${sock}`, '-device', `vhost-user-blk-pci,chardev=vu${i},num-queues=2`]),
      });
      recordTiming('vdx-split', r.durationMs);
      expectGuestOk(r);
      expect(r.output.match(/FIO-VERIFY-OK/g)?.length).toBe(2);
      expect(r.output).toContain('SPLIT-FIO-OK');
    } finally {
      vdx.kill('SIGTERM');
      expect(await exited(vdx)).toBe(0);
      await new Promise<void>((r) => log.end(r));
    }
    // fio wrote inside parts 1 and 2 only: the bytes of parts 0 and 3 are as they were (zeroes).
    const bytes = readFileSync(img);
    const written = (from: number) => bytes.subarray(from, from + PART).some((b) => b !== 0);
    expect([0, 1, 2, 3].map((i) => written(i * PART))).toEqual([false, true, true, false]);
    // The parts' queues ran on both reactors, each opening its own channel on the base.
    const reactors = new Set(
      readFileSync(logPath, 'utf8')
        .split('\n')
        .filter((l) => l.includes('queue started'))
        .map((l) => (JSON.parse(l) as { reactor: number }).reactor),
    );
    expect(reactors.size).toBe(2);
  });

  test('file bdev: discard releases the file blocks, write-zeroes zeroes them', async () => {
    const img = image(64 * MiB);
    const r = await guestOn(new VdxVhostUser({ logName: 'vdx-discard' }), 1, 'discard', {}, img);
    expect(r.output).toContain('DISCARD-OK');
    const data = readFileSync(img);
    const zero = (a: number, b: number) => data.subarray(a, b).every((x) => x === 0);
    expect(zero(0, 12 * MiB)).toBe(true); // discarded and zeroed ranges
    expect(zero(12 * MiB, 16 * MiB)).toBe(false); // untouched random data
    // 16 MiB were written; the 8 MiB discard must have given its blocks back.
    const allocated = statSync(img).blocks * 512;
    expect(allocated).toBeLessThanOrEqual(8 * MiB + 256 * 1024);
    expect(allocated).toBeGreaterThanOrEqual(4 * MiB);
  });

  test('readonly export: guest reads work, writes fail, the image is unchanged', async () => {
    const img = image(16 * MiB);
    writeFileSync(img, Buffer.alloc(MiB, 0x5a), { flag: 'r+' });
    const before = createHash('sha256').update(readFileSync(img)).digest('hex');
    const r = await guestOn(new VdxVhostUser({ exportKeys: 'readonly=on', logName: 'vdx-ro' }), 1, 'readonly', {}, img);
    expect(r.output).toContain('READONLY-OK');
    expect(createHash('sha256').update(readFileSync(img)).digest('hex')).toBe(before);
  });

  test('two guests in a row on one export; idle daemon CPU', async () => {
    const vdx = new VdxVhostUser({ bdev: () => 'malloc:size=64M', logName: 'vdx-reconnect' });
    const socket = join(dir, 'vu.sock');
    await vdx.start({ socket, image: '', queues: 2 });
    const qemuArgs = ['-chardev', `socket,id=vu0,path=${socket}`, '-device', 'vhost-user-blk-pci,chardev=vu0,num-queues=2'];
    let cpuPercent = -1;
    let boots = 0;
    try {
      const first = await runGuest({ name: 'vdx-reconnect-1', script: check('blk-guest'), env: { QUEUES: '2' }, sharedMemory: true, qemuArgs });
      expectGuestOk(first);
      boots += first.boots;
      // The second guest finds the first one's files (same malloc bdev), then idles while we measure vdx.
      const second = await runGuest({
        name: 'vdx-reconnect-2',
        script: [
          '. "$VDX_SRC/test/e2e/guest/lib.sh"',
          'wait_until 20 test -b /dev/vda || fail "no /dev/vda"',
          'fsck.ext4 -fn /dev/vda >/dev/null || fail "fsck after reconnect"',
          'mkdir -p /tmp/m && mount /dev/vda /tmp/m && test -f /tmp/m/dir/numbers.txt && umount /tmp/m || fail "first guest files missing"',
          'echo "second guest sees the first one\'s files"',
          'touch "$VDX_RUN/idle"',
          'wait_until 60 test -e "$VDX_RUN/measured" || fail "host never measured"',
        ].join('\n'),
        sharedMemory: true,
        qemuArgs,
        whileRunning: async (runDir, guestExited) => {
          const deadline = Date.now() + 120_000;
          while (!existsSync(join(runDir, 'idle'))) {
            if (guestExited.aborted) throw new Error('guest exited before going idle');
            if (Date.now() > deadline) throw new Error('guest never went idle');
            await new Promise((r) => setTimeout(r, 100));
          }
          cpuPercent = await cpuOver(vdx.pid!, 10_000);
          writeFileSync(join(runDir, 'measured'), String(cpuPercent));
        },
      });
      expectGuestOk(second);
      boots += second.boots;
      expect(second.output).toContain("second guest sees the first one's files");
    } finally {
      await vdx.stop();
    }
    const log = readFileSync(vdx.logPath, 'utf8');
    // One front-end per boot (a boot repeated after the TCG int3 artifact connects too).
    expect(log.match(/front-end connected/g)?.length).toBe(boots);
    expect(log.match(/session ended/g)?.length).toBe(boots);
    expect(boots).toBeGreaterThanOrEqual(2);
    recordTiming('vdx-idle-cpu-percent-x1000', Math.round(cpuPercent * 1000));
    expect(cpuPercent).toBeGreaterThanOrEqual(0);
    expect(cpuPercent).toBeLessThan(2);
  });
});

describe('vdx over vhost-user, libblkio client (Debian 13 userland)', () => {
  async function qemuIo(socket: string, cmds: string[]) {
    const args = ['qemu-io'];
    for (const c of cmds) args.push('-c', c);
    args.push('--image-opts', `driver=virtio-blk-vhost-user,path=${socket},cache.direct=on`);
    return runInUserland(args);
  }

  test('malloc bdev: writes a pattern and reads it back', async () => {
    const vdx = new VdxVhostUser({ bdev: () => 'malloc:size=64M', logName: 'vdx-libblkio' });
    const socket = join(dir, 'vu.sock');
    await vdx.start({ socket, image: '', queues: 1 });
    try {
      const r = await qemuIo(socket, ['write -P 0xab 4096 64k', 'read -P 0xab 4096 64k', 'read -P 0 0 4096']);
      expect(r.stderr + r.stdout).not.toMatch(/fail|error/i);
      expect(r.stdout).toMatch(/wrote 65536\/65536 bytes at offset 4096/);
      expect(r.stdout).toMatch(/read 65536\/65536 bytes at offset 4096/);
      expect(r.code).toBe(0);
      // a second client after the first disconnected
      const again = await qemuIo(socket, ['read -P 0xab 4096 64k']);
      expect(again.stdout).toMatch(/read 65536\/65536 bytes/);
      expect(again.stdout + again.stderr).not.toMatch(/Pattern verification failed/);
    } finally {
      await vdx.stop();
    }
  });

  test('a second client while the first is connected waits in the listen backlog, then is served', async () => {
    const vdx = new VdxVhostUser({ bdev: () => 'malloc:size=64M', logName: 'vdx-libblkio-handover' });
    const socket = join(dir, 'vu.sock');
    await vdx.start({ socket, image: '', queues: 1 });
    try {
      const t0 = Date.now();
      let firstDone = 0;
      const first = qemuIo(socket, ['write -P 0xcd 0 64k', 'sleep 3000']).then((r) => ((firstDone = Date.now() - t0), r));
      // Wait until vdx has taken the first one.
      for (let i = 0; i < 100 && !/front-end connected/.test(readFileSync(vdx.logPath, 'utf8')); i++) await new Promise((r) => setTimeout(r, 100));
      const second = await qemuIo(socket, ['read -P 0xcd 0 64k']);
      const secondDone = Date.now() - t0;
      const r1 = await first;
      expect(r1.code).toBe(0);
      expect(second.code).toBe(0);
      expect(second.stdout).toMatch(/read 65536\/65536 bytes at offset 0/);
      expect(second.stdout + second.stderr).not.toMatch(/fail|error/i);
      // It was served after the first left, and saw what the first wrote.
      expect(firstDone).toBeGreaterThan(0);
      expect(secondDone).toBeGreaterThanOrEqual(firstDone);
      const log = readFileSync(vdx.logPath, 'utf8');
      expect(log.match(/front-end connected/g)?.length).toBe(2);
      expect(log).not.toMatch(/refusing another connection/);
    } finally {
      await vdx.stop();
    }
  });

  test('null bdev: a read succeeds', async () => {
    const vdx = new VdxVhostUser({ bdev: () => 'null:size=1G', logName: 'vdx-null' });
    const socket = join(dir, 'vu.sock');
    await vdx.start({ socket, image: '', queues: 1 });
    try {
      const r = await qemuIo(socket, ['read 0 1M', 'read 1023M 1M']);
      expect(r.stdout).toMatch(/read 1048576\/1048576 bytes at offset 0/);
      expect(r.stdout).toMatch(/read 1048576\/1048576 bytes at offset 1072693248/);
      expect(r.code).toBe(0);
    } finally {
      await vdx.stop();
    }
  });
});

/** CPU use of a process (all threads) over `ms`, in percent of one core. */
async function cpuOver(pid: number, ms: number): Promise<number> {
  const ticks = () => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]); // utime + stime, fields 14 and 15
  };
  const t0 = ticks();
  const s0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const t1 = ticks();
  return ((t1 - t0) / 100 / ((performance.now() - s0) / 1000)) * 100;
}
