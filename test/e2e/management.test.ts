// vdx managed at run time, as an orchestrator does it: SPDK's own rpc.py makes a
// malloc bdev and a vhost-user controller on a running daemon, a QEMU guest
// verifies the disk with fio, the guest's IOPS are measured while 32-export
// create/delete cycles run beside it, the metrics endpoint counts what fio did,
// deleting the busy controller is refused, and save_config replayed by
// `vdx serve --config` gives the same configuration back.
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { rpcCall } from '../../src/rpc/client.js';
import { CACHE, LOG_DIR, REPO, expectGuestOk, killTracked, recordTiming, run, runGuest, spawnTracked, waitForPath } from './vm.js';

afterEach(() => killTracked());

let dir = '';
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vdx-mgmt-'));
  return () => rmSync(dir, { recursive: true, force: true });
});

/** SPDK's rpc.py (25.05): not in Debian, so it is found where a developer put it (see README). */
export const SPDK_RPC = process.env.VDX_SPDK_RPC ?? join(CACHE, 'spdk-rpc-25.05/scripts/rpc.py');
const haveRpcPy = existsSync(SPDK_RPC);

async function rpcPy(sock: string, args: string[]) {
  const r = await run('/usr/bin/python3', [SPDK_RPC, '-s', sock, ...args], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`rpc.py ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

function startVdx(args: string[], logName: string): ChildProcess {
  const child = spawnTracked(process.execPath, [join(REPO, 'dist/cli/main.js'), 'serve', '--log-format', 'json', ...args]);
  const log = createWriteStream(join(LOG_DIR, `${logName}.log`));
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return child;
}

async function stopVdx(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) throw new Error(`vdx already exited (${child.exitCode})`);
  const done = new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
  child.kill('SIGTERM');
  expect(await done).toBe(0);
}

async function waitFile(runDir: string, name: string, guestExited: AbortSignal, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(join(runDir, name))) {
    if (guestExited.aborted) throw new Error(`guest exited before it wrote ${name}`);
    if (Date.now() > deadline) throw new Error(`guest never wrote ${name}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function touch(runDir: string, name: string): void {
  writeFileSync(join(runDir, name), '');
}

/** Sum of one metric family's samples whose labels include `match`. */
function metricSum(text: string, family: string, match: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${family}{`) || !line.includes(match)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function scrape(port: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return r.text();
}

function fioRead(runDir: string, name: string): { iops: number; ios: number } {
  const j = JSON.parse(readFileSync(join(runDir, `fio-${name}.json`), 'utf8')) as { jobs: { read: { iops: number; total_ios: number } }[] };
  return { iops: j.jobs[0]!.read.iops, ios: j.jobs[0]!.read.total_ios };
}

const CHURN_EXPORTS = 32;
/** the guest's fio run during the churn (SECS in managed-disk.sh) */
const CHURN_WINDOW_MS = 8000;

/** framework_get_config of every subsystem, keyed by subsystem. */
async function allConfig(sock: string): Promise<Record<string, unknown>> {
  const subs = (await rpcCall(sock, 'framework_get_subsystems')) as { subsystem: string }[];
  const out: Record<string, unknown> = {};
  for (const s of subs) out[s.subsystem] = await rpcCall(sock, 'framework_get_config', { name: s.subsystem });
  return out;
}

describe('a running vdx managed over JSON-RPC', () => {
  test('rpc.py creates a disk a QEMU guest verifies; exports churn beside it; metrics; save_config round trip', async () => {
    const sock = join(dir, 'rpc.sock');
    const port = 19000 + Math.floor(Math.random() * 1000);
    const vdx = startVdx(['--bdev', 'null:name=spare,size=64M', '--rpc-socket', sock, '--vhost-socket-dir', dir, '--metrics', `127.0.0.1:${port}`], 'vdx-managed');
    await waitForPath(sock, vdx, 'vdx');
    // The controller is made the way an SPDK user makes it; without rpc.py, through vdx's own client.
    if (haveRpcPy) {
      expect((await rpcPy(sock, ['bdev_malloc_create', '-b', 'disk0', '64', '512'])).trim()).toBe('disk0');
      await rpcPy(sock, ['vhost_create_blk_controller', 'vhost.0', 'disk0']);
    } else {
      process.stderr.write(`management e2e: ${SPDK_RPC} is missing, using vdx's client for the rpc.py steps\n`);
      await rpcCall(sock, 'bdev_malloc_create', { name: 'disk0', num_blocks: 131072, block_size: 512 });
      await rpcCall(sock, 'vhost_create_blk_controller', { ctrlr: 'vhost.0', dev_name: 'disk0' });
    }
    const vsock = join(dir, 'vhost.0');
    expect(statSync(vsock).mode & 0o777).toBe(0o600);

    const churn = { cycles: 0, ops: 0, maxOpMs: 0 };
    let deleteRefused = '';
    const scraped: string[] = [];
    const fio: Record<string, { iops: number; ios: number }> = {};
    const r = await runGuest({
      name: 'vdx-managed',
      script: 'exec bash "$VDX_SRC/test/e2e/guest/checks/managed-disk.sh"',
      sharedMemory: true,
      qemuArgs: ['-chardev', `socket,id=vu0,path=${vsock}`, '-device', 'vhost-user-blk-pci,chardev=vu0,num-queues=1'],
      timeoutMs: 300_000,
      whileRunning: async (runDir, guestExited) => {
        for (const n of [1, 2]) {
          await waitFile(runDir, `scrape-${n}`, guestExited);
          scraped.push(await scrape(port));
          touch(runDir, `scraped-${n}`);
        }
        await waitFile(runDir, 'churn-start', guestExited);
        touch(runDir, 'churning');
        // One cycle (32 bdevs and controllers created, then deleted: 128 requests)
        // spread over the guest's 8 s fio run, and more until it ends. Faster
        // churn measures this 2-core machine instead: the daemon spends ~0.6 ms
        // of CPU per request, and the guest (TCG) is CPU-bound on the same cores.
        const spacingMs = CHURN_WINDOW_MS / (4 * CHURN_EXPORTS);
        const op = async (method: string, params: Record<string, unknown>) => {
          const t = performance.now();
          await rpcCall(sock, method, params);
          const ms = performance.now() - t;
          churn.maxOpMs = Math.max(churn.maxOpMs, ms);
          churn.ops++;
          await new Promise((res) => setTimeout(res, Math.max(0, spacingMs - ms)));
        };
        while (!existsSync(join(runDir, 'churn-stop')) || churn.cycles === 0) {
          if (guestExited.aborted) throw new Error('guest exited during the churn');
          for (let i = 0; i < CHURN_EXPORTS; i++) {
            await op('bdev_malloc_create', { name: `churn${i}`, num_blocks: 8192, block_size: 512 });
            await op('vhost_create_blk_controller', { ctrlr: `churn${i}`, dev_name: `churn${i}` });
          }
          for (let i = 0; i < CHURN_EXPORTS; i++) {
            await op('vhost_delete_controller', { ctrlr: `churn${i}` });
            await op('bdev_malloc_delete', { name: `churn${i}` });
          }
          churn.cycles++;
        }
        touch(runDir, 'churn-stopped');
        await waitFile(runDir, 'delete-try', guestExited);
        for (const n of ['base1', 'churn', 'base2']) fio[n] = fioRead(runDir, n);
        deleteRefused = await rpcCall(sock, 'vhost_delete_controller', { ctrlr: 'vhost.0' }).then(
          () => 'deleted',
          (e: Error) => e.message,
        );
        touch(runDir, 'delete-tried');
      },
    });
    recordTiming('vdx-managed', r.durationMs);
    expectGuestOk(r);
    expect(r.output).toContain('FIO-VERIFY-OK');
    expect(r.output).toContain('MANAGED-DISK-OK');
    expect(deleteRefused).toMatch(/vhost controller 'vhost.0' is in use \(a front-end is connected\)/);

    // Metrics: the export's completed reads grew by exactly what fio read (within 1 %).
    const reads = scraped.map((t) => metricSum(t, 'node_disk_reads_completed_total', 'export="vhost.0"'));
    const counted = reads[1]! - reads[0]!;
    recordTiming('metrics-reads-counted', counted);
    recordTiming('metrics-reads-fio', fio.base1!.ios);
    expect(Math.abs(counted - fio.base1!.ios) / fio.base1!.ios).toBeLessThan(0.01);

    // Churn: IOPS while whole 32-export cycles ran, against the mean of the runs before and after.
    expect(churn.cycles).toBeGreaterThanOrEqual(1);
    const base = (fio.base1!.iops + fio.base2!.iops) / 2;
    const ratio = fio.churn!.iops / base;
    process.stderr.write(
      `management e2e: guest randread IOPS ${fio.base1!.iops.toFixed(0)} before, ${fio.churn!.iops.toFixed(0)} during ${churn.cycles} cycles of ${CHURN_EXPORTS} exports (${churn.ops} requests ${(CHURN_WINDOW_MS / (4 * CHURN_EXPORTS)).toFixed(0)} ms apart, slowest ${churn.maxOpMs.toFixed(1)} ms), ${fio.base2!.iops.toFixed(0)} after: ${(ratio * 100).toFixed(1)} %\n`,
    );
    recordTiming('churn-iops-ratio-x1000', Math.round(ratio * 1000));
    expect(ratio).toBeGreaterThan(0.9);

    // save_config, then a new daemon from that file: the same configuration.
    const saved = join(dir, 'saved.json');
    if (haveRpcPy) {
      writeFileSync(saved, await rpcPy(sock, ['save_config']));
    } else {
      const s = await run(process.execPath, [join(REPO, 'dist/cli/main.js'), 'config', 'save', saved, '--rpc-socket', sock]);
      expect(s.code).toBe(0);
    }
    const before = await allConfig(sock);
    await stopVdx(vdx);
    const again = startVdx(['--config', saved, '--rpc-socket', sock, '--vhost-socket-dir', dir], 'vdx-managed-restored');
    await waitForPath(sock, again, 'vdx');
    await waitForPath(vsock, again, 'vdx (restored controller)');
    expect(await allConfig(sock)).toEqual(before);
    expect(JSON.parse(readFileSync(saved, 'utf8'))).toEqual({ subsystems: Object.entries(before).map(([subsystem, config]) => ({ subsystem, config })) });
    await stopVdx(again);
  }, 420_000);
});
