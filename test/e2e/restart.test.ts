// Crash-safe restart over vhost-user: a QEMU 7.2 guest (chardev reconnect=1,
// 2 queues per disk) runs fio with verification while vdx is SIGKILLed at
// random moments and started again with the same command. QEMU hands the new
// vdx the in-flight region the old one kept (INFLIGHT_SHMFD); requests the
// old one never completed run again, completed ones do not
// (test/e2e/guest/checks/restart-phases.sh checks the guest's side).
// Disks: a and b are files (O_DIRECT on a split ring, and through the page
// cache with ext4 on top on a packed ring). A file answers in ~0.1 ms while
// the TCG guest takes ~6 ms per request, so a kill seldom finds one of theirs
// in flight; c (split) and d (packed) are nbdkit exports that answer reads
// after 20 ms and writes after 2 ms, so every kill finds requests to run
// again, completed out of order (without the region, a restart then loses
// some and runs others twice).
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { NbdServer } from './nbd-servers.js';
import { LOG_DIR, REPO, exited, expectGuestOk, killTracked, recordTiming, runGuest, serveRequests, spawnTracked } from './vm.js';

afterEach(() => killTracked());

const MiB = 1 << 20;
// 3 SIGKILLs and the upgrade stop (the second), all while fio runs
const KILLS = 4;
const RUNTIME_S = 60;

interface LogLine {
  msg?: string;
  export?: string;
  queue?: number;
  resubmitted?: number;
}

describe('vdx restart under guest I/O, vhost-user, QEMU 7.2 reconnect=1', () => {
  test(`fio verify on a raw disk (O_DIRECT file, split ring), on ext4 (page-cache file, packed ring) and on two slow nbd disks (split, packed) across ${KILLS - 1} SIGKILLs and an upgrade stop (SIGUSR2): no error, no request lost or run twice, fsck clean`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vdx-restart-'));
    try {
      const images = { a: join(dir, 'a.img'), b: join(dir, 'b.img') };
      for (const p of Object.values(images)) {
        writeFileSync(p, '');
        truncateSync(p, 64 * MiB);
      }
      // Files, not memory: nbdkit 1.32 can abort when a killed vdx leaves replies in
      // flight, and a server started again must still hold what fio wrote.
      const slowServer = (n: string) => {
        const file = join(dir, `slow-${n}.img`);
        writeFileSync(file, '');
        truncateSync(file, 64 * MiB);
        return new NbdServer({ kind: 'nbdkit', socket: join(dir, `slow-${n}.sock`), args: ['--filter=delay', 'file', file, 'rdelay=20ms', 'wdelay=2ms'], logName: `nbd-restart-slow-${n}`, restartIfItDies: true });
      };
      const slow = { c: slowServer('c'), d: slowServer('d') };
      await slow.c.start();
      await slow.d.start();
      const sock = (n: string) => join(dir, `vu-${n}.sock`);
      const DISKS = ['a', 'b', 'c', 'd'];
      const PACKED = new Set(['b', 'd']);
      const args = [
        join(REPO, 'dist/cli/main.js'), 'serve', '--log-format', 'json', '--rpc-socket', 'none', '--reactors', '2',
        '--bdev', `file:name=a,path=${images.a},direct=on`, '--export', `vhost-user:bdev=a,socket=${sock('a')},num-queues=2`,
        '--bdev', `file:name=b,path=${images.b},direct=off`, '--export', `vhost-user:bdev=b,socket=${sock('b')},num-queues=2,packed=on`,
        '--bdev', `nbd:name=c,path=${slow.c.o.socket}`, '--export', `vhost-user:bdev=c,socket=${sock('c')},num-queues=2`,
        '--bdev', `nbd:name=d,path=${slow.d.o.socket}`, '--export', `vhost-user:bdev=d,socket=${sock('d')},num-queues=2,packed=on`,
      ];
      mkdirSync(LOG_DIR, { recursive: true });
      const logPath = join(LOG_DIR, 'vdx-restart.log');
      const log = createWriteStream(logPath);
      let generation = 0;
      const start = async (): Promise<ChildProcess> => {
        await Promise.all([slow.c.ready(), slow.d.ready()]);
        const child = spawnTracked(process.execPath, args);
        child.stdout?.pipe(log, { end: false });
        child.stderr?.pipe(log, { end: false });
        generation++;
        // vdx listens only when ready (QEMU 7.2 never reconnects after a drop
        // before the device starts). The killed one's socket files are still
        // there, so wait for the new one to say it listens on all.
        await new Promise<void>((resolve, reject) => {
          let seen = 0;
          let text = '';
          const timer = setTimeout(() => reject(new Error('vdx did not listen within 30 s')), 30_000);
          child.once('exit', (code) => reject(new Error(`vdx exited (${code}) before listening`)));
          child.stderr?.on('data', (d: Buffer) => {
            text += d.toString();
            const parts = text.split('\n');
            text = parts.pop()!;
            seen += parts.filter((l) => l.includes('"msg":"listening"')).length;
            if (seen >= DISKS.length) {
              clearTimeout(timer);
              resolve();
            }
          });
        });
        return child;
      };
      let vdx = await start();
      const qemuArgs: string[] = [];
      for (const n of DISKS) {
        qemuArgs.push('-chardev', `socket,id=vu${n},path=${sock(n)},reconnect=1`, '-device', `vhost-user-blk-pci,chardev=vu${n},num-queues=2${PACKED.has(n) ? ',packed=on' : ''}`);
      }

      // Per boot: a guest that dies on the TCG int3 artifact is booted again
      // (runGuest), and only the boot that finished is judged.
      const downMs: number[] = [];
      let bootGeneration = 0;
      let upgradeExit: number | null | undefined;
      let bootLogMark = '';
      const kills = async () => {
        for (let k = 0; k < KILLS; k++) {
          await new Promise((r) => setTimeout(r, 3000 + Math.random() * 7000));
          const t0 = Date.now();
          // The second is the stop for an upgrade: in-flight I/O drains, vdx exits 0.
          vdx.kill(k === 1 ? 'SIGUSR2' : 'SIGKILL');
          const code = await exited(vdx);
          if (k === 1) upgradeExit = code;
          // The stale sockets stay behind, as after a crash; the new vdx takes them over.
          vdx = await start();
          downMs.push(Date.now() - t0);
        }
      };
      const r = await runGuest({
        name: 'vdx-restart',
        script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/restart-phases.sh"',
        env: { RUNTIME: String(RUNTIME_S) },
        sharedMemory: true,
        // ~90 s when it works; a lost request stalls the guest instead of failing it.
        timeoutMs: 300_000,
        qemuArgs,
        whileRunning: (runDir, stop) => {
          downMs.length = 0;
          bootGeneration = generation;
          bootLogMark = `{"msg":"test: guest boot ${Date.now()}"}`;
          log.write(`${bootLogMark}\n`);
          return serveRequests(runDir, stop, { kills });
        },
      });
      recordTiming('vdx-restart', r.durationMs);
      expectGuestOk(r);
      expect(r.output).toContain('RESTART-OK');
      expect(downMs.length).toBe(KILLS);
      expect(generation - bootGeneration).toBe(KILLS);
      expect(upgradeExit).toBe(0);

      // Every restart resumed the queues from the region, and some requests were in flight to run again.
      const text = readFileSync(logPath, 'utf8');
      const lines = text
        .slice(text.lastIndexOf(bootLogMark))
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as LogLine);
      const resumed = lines.filter((l) => l.msg === 'queue resumed from the in-flight region');
      expect(resumed.length).toBeGreaterThanOrEqual(KILLS * 2 * DISKS.length);
      // Requests ran again on the slow disks, split and packed.
      for (const n of ['c', 'd']) expect(resumed.filter((l) => l.export === n).reduce((k, l) => k + (l.resubmitted ?? 0), 0)).toBeGreaterThan(0);
      expect(lines.some((l) => /queue broken|not started/.test(l.msg ?? ''))).toBe(false);
      expect(lines.some((l) => /SIGUSR2: stopping for an upgrade/.test(l.msg ?? ''))).toBe(true);
      process.stderr.write(`restart: vdx down ${downMs.join(', ')} ms (SIGKILL to listening again); nbdkit died on its own and was started again ${slow.c.deaths + slow.d.deaths} times; ${r.output.split('\n').filter((l) => l.startsWith('fio ')).join('; ')}\n`);
      vdx.kill('SIGTERM');
      expect(await exited(vdx)).toBe(0);
      await slow.c.stop();
      await slow.d.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 900_000);
});
