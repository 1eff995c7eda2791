// vdx's NBD client bdev under a QEMU guest, against real servers (qemu-nbd
// 7.2, nbdkit 1.32) on unix sockets and 127.0.0.1: one guest boot, several
// phases, the host killing, restarting and failing servers when the guest asks.
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { NbdServer, freePort } from './nbd-servers.js';
import { LOG_DIR, REPO, exited, expectGuestOk, killTracked, recordTiming, runGuest, serveRequests, spawnTracked, waitForPath } from './vm.js';

afterEach(() => killTracked());

const MiB = 1 << 20;
const RECONNECT_TIMEOUT = 5;
const IO_TIMEOUT = 3;

let dir = '';
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vdx-nbd-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

function image(name: string, sizeBytes: number): string {
  const p = join(dir, name);
  writeFileSync(p, '');
  truncateSync(p, sizeBytes);
  return p;
}

describe('nbd bdev over vhost-user, QEMU 7.2 guest', () => {
  test('qemu-nbd (unix) and nbdkit (TCP): fio verify, injected errors, server restart during fio, a stalled server, a server that stays down', async () => {
    const errFile = join(dir, 'errors-on');
    const a = new NbdServer({ kind: 'qemu-nbd', socket: join(dir, 'a.sock'), args: ['-f', 'raw', '--discard=unmap', image('a.img', 64 * MiB)], logName: 'nbd-qemu-a' });
    const b = new NbdServer({ kind: 'nbdkit', port: await freePort(), args: ['memory', '64M'], logName: 'nbd-nbdkit-b' });
    const c = new NbdServer({
      kind: 'nbdkit',
      socket: join(dir, 'c.sock'),
      args: ['--filter=error', 'memory', '64M', 'error=EIO', 'error-pread-rate=100%', `error-file=${errFile}`],
      logName: 'nbd-nbdkit-c',
    });
    const d = new NbdServer({ kind: 'qemu-nbd', socket: join(dir, 'd.sock'), args: ['-f', 'raw', image('d.img', 16 * MiB)], logName: 'nbd-qemu-d' });
    for (const s of [a, b, c, d]) await s.start();

    const disks: [string, string][] = [
      ['a', `nbd:name=a,uri=${a.uri}`],
      ['b', `nbd:name=b,host=127.0.0.1,port=${b.o.port}`],
      ['c', `nbd:name=c,path=${c.o.socket}`],
      ['d', `nbd:name=d,uri=${d.uri},reconnect-timeout=${RECONNECT_TIMEOUT},io-timeout=${IO_TIMEOUT}`],
    ];
    // Two reactors and two queues on a and b: qemu-nbd (a) offers no multi-conn, so both of a's
    // queues must share one reactor (one connection); nbdkit's memory plugin (b) offers it.
    const args = [join(REPO, 'dist/cli/main.js'), 'serve', '--log-format', 'json', '--rpc-socket', 'none', '--reactors', '2'];
    const qemuArgs: string[] = [];
    const queues: Record<string, number> = { a: 2, b: 2, c: 1, d: 1 };
    for (const [name, bdev] of disks) {
      const sock = join(dir, `vu-${name}.sock`);
      args.push('--bdev', bdev, '--export', `vhost-user:bdev=${name},socket=${sock},num-queues=${queues[name]}`);
      qemuArgs.push('-chardev', `socket,id=vu${name},path=${sock}`, '-device', `vhost-user-blk-pci,chardev=vu${name},num-queues=${queues[name]}`);
    }
    const vdx: ChildProcess = spawnTracked(process.execPath, args);
    mkdirSync(LOG_DIR, { recursive: true });
    const logPath = join(LOG_DIR, 'vdx-nbd.log');
    const log = createWriteStream(logPath);
    vdx.stdout?.pipe(log);
    vdx.stderr?.pipe(log);
    for (const [name] of disks) await waitForPath(join(dir, `vu-${name}.sock`), vdx, 'vdx', 30_000);

    const restartAt: number[] = [];
    const r = await runGuest({
      name: 'vdx-nbd',
      script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/nbd-phases.sh"',
      env: { RECONNECT_TIMEOUT: String(RECONNECT_TIMEOUT), IO_TIMEOUT: String(IO_TIMEOUT) },
      sharedMemory: true,
      timeoutMs: 600_000,
      qemuArgs,
      whileRunning: (runDir, stop) =>
        serveRequests(runDir, stop, {
          'errors-on': async () => writeFileSync(errFile, ''),
          'errors-off': async () => rmSync(errFile, { force: true }),
          'restart-a': async () => {
            await a.kill();
            restartAt.push(Date.now());
            await new Promise((res) => setTimeout(res, 1000));
            await a.start();
          },
          'stop-d': async () => d.signal('SIGSTOP'),
          'cont-d': async () => d.signal('SIGCONT'),
          'kill-d': () => d.kill(),
        }),
    });
    recordTiming('vdx-nbd', r.durationMs);
    expectGuestOk(r);
    for (const p of ['PHASE-A-OK', 'PHASE-B-OK', 'PHASE-C-OK', 'PHASE-D-OK', 'PHASE-E-OK', 'PHASE-F-OK', 'NBD-PHASES-OK']) expect(r.output).toContain(p);
    expect(restartAt.length).toBe(1);

    // vdx saw the restart as a lost connection and came back, and gave up on d after the timeout.
    const lines = readFileSync(logPath, 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; export?: string; reactor?: number; bdev?: string; why?: string });
    const reactorsOf = (name: string) => new Set(lines.filter((l) => l.msg === 'queue started' && l.export === name).map((l) => l.reactor));
    expect(reactorsOf('a').size).toBe(1);
    expect(reactorsOf('b').size).toBe(2);
    expect(lines.some((l) => l.msg === 'nbd connection lost; reconnecting')).toBe(true);
    expect(lines.some((l) => l.msg === 'nbd connection lost; reconnecting' && l.bdev === 'd' && /io-timeout/.test(l.why ?? ''))).toBe(true);
    expect(lines.some((l) => l.msg === 'nbd connection restored')).toBe(true);
    expect(lines.some((l) => l.msg?.startsWith('nbd server unreachable'))).toBe(true);

    vdx.kill('SIGTERM');
    expect(await exited(vdx)).toBe(0);
    for (const s of [a, b, c]) await s.stop();
  }, 900_000);
});
