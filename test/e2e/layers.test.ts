// Layered bdevs on the host (no guest): a file bdev split in 4 on the command
// line, two parts exported over vhost-user and written by libblkio (qemu-io
// from the Debian 13 userland), the bytes landing at each part's offset of the
// file; the claims as an orchestrator meets them over JSON-RPC (SPDK's rpc.py
// where it is installed); a passthru made over RPC on a third part, exported,
// and brought back after a SIGKILL in the right order.
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { CACHE, REPO, exited, killTracked, run, runInUserland, serveVdx } from './vm.js';

const SPDK_RPC = process.env.VDX_SPDK_RPC ?? join(CACHE, 'spdk-rpc-25.05/scripts/rpc.py');

const MAIN = join(REPO, 'dist/cli/main.js');
const MiB = 1 << 20;
const dir = mkdtempSync(join(tmpdir(), 'vdx-layers-'));
const sock = join(dir, 'rpc.sock');
const img = join(dir, 'disk.img');
const PART = 8 * MiB;
afterAll(async () => {
  await killTracked();
  rmSync(dir, { recursive: true, force: true });
});

let out = '';
async function serve(): Promise<ChildProcess> {
  const v = await serveVdx([
    '--bdev', `file:name=f0,path=${img},direct=off`,
    '--bdev', 'split:base=f0,count=4',
    // An error bdev from the command line is named as bdev_error_create names it: a restart must not restore it twice.
    '--bdev', 'null:name=z0,size=1M,rw-ios-per-sec=50', '--bdev', 'error:name=EE_z0,base=z0',
    '--export', `vhost-user:bdev=f0p1,socket=${join(dir, 'p1.sock')}`,
    '--export', `vhost-user:bdev=f0p2,socket=${join(dir, 'p2.sock')}`,
    '--rpc-socket', sock, '--vhost-socket-dir', dir, '--state-dir', join(dir, 'state'), '--log-format', 'json',
  ]);
  out = v.log();
  v.proc.stderr?.on('data', () => (out = v.log()));
  return v.proc;
}

/** vdx's own client; `fails` expects a refusal and returns its message. */
async function rpc(method: string, params: Record<string, unknown> = {}, fails = false): Promise<unknown> {
  const r = await run(process.execPath, [MAIN, 'rpc', '--rpc-socket', sock, method, JSON.stringify(params)], { timeoutMs: 20_000 });
  if (fails) {
    expect(r.code, r.stdout).not.toBe(0);
    return r.stderr;
  }
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as unknown;
}

const qemuIo = (socket: string, ...cmds: string[]) =>
  runInUserland(['qemu-io', ...cmds.flatMap((c) => ['-c', c]), '--image-opts', `driver=virtio-blk-vhost-user,path=${socket},cache.direct=on`]);

function fileBytes(offset: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  const fd = openSync(img, 'r');
  try {
    readSync(fd, b, 0, len, offset);
  } finally {
    closeSync(fd);
  }
  return b;
}

interface BdevJson {
  name: string;
  assigned_rate_limits: Record<string, number>;
  num_blocks: number;
  claimed: boolean;
  claim_type?: string;
  claimed_by?: string[];
  base_bdevs?: string[];
  driver_specific: Record<string, Record<string, unknown>>;
}

describe('split and passthru', () => {
  test('parts written by libblkio land at their offsets; claims refuse a second writer; a passthru made over RPC comes back after SIGKILL', async () => {
    writeFileSync(img, '');
    truncateSync(img, 4 * PART);
    let vdx = await serve();

    // Two parts at once, each its own disk to the client.
    const [w1, w2] = await Promise.all([qemuIo(join(dir, 'p1.sock'), 'write -P 0x11 0 1M', `write -P 0x1f ${PART - 65536} 64k`), qemuIo(join(dir, 'p2.sock'), 'write -P 0x22 0 1M')]);
    expect(w1.stdout, w1.stderr).toMatch(/wrote 1048576\/1048576 bytes at offset 0/);
    expect(w1.stdout, w1.stderr).toMatch(new RegExp(`wrote 65536/65536 bytes at offset ${PART - 65536}`));
    expect(w2.stdout, w2.stderr).toMatch(/wrote 1048576\/1048576 bytes at offset 0/);
    const len = await qemuIo(join(dir, 'p1.sock'), 'length');
    expect(len.stdout).toMatch(/^8 MiB/m);
    // The part's last block is its own; one past it belongs to no one through this disk.
    const past = await qemuIo(join(dir, 'p1.sock'), `read ${PART} 4k`);
    expect(past.stdout + past.stderr).not.toMatch(/read 4096\/4096/);
    expect(fileBytes(PART, 1 * MiB).every((b) => b === 0x11)).toBe(true);
    expect(fileBytes(2 * PART - 65536, 65536).every((b) => b === 0x1f)).toBe(true);
    expect(fileBytes(2 * PART, 1 * MiB).every((b) => b === 0x22)).toBe(true);
    expect(fileBytes(0, 1 * MiB).every((b) => b === 0)).toBe(true); // part 0 untouched
    expect(fileBytes(3 * PART, 1 * MiB).every((b) => b === 0)).toBe(true);
    const r = await qemuIo(join(dir, 'p2.sock'), 'read -P 0x22 0 1M');
    expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed/);

    // The tree as listings show it.
    const bdevs = (await rpc('bdev_get_bdevs')) as BdevJson[];
    const f0 = bdevs.find((b) => b.name === 'f0')!;
    expect(f0).toMatchObject({ claimed: true, claim_type: 'exclusive_write', claimed_by: ['split f0'] });
    const p2 = bdevs.find((b) => b.name === 'f0p2')!;
    expect(p2).toMatchObject({ num_blocks: PART / 512, claimed: true, claimed_by: ['vhost controller f0p2'], base_bdevs: ['f0'] });
    expect(p2.driver_specific.split).toEqual({ base_bdev: 'f0', offset_blocks: (2 * PART) / 512 });

    // A limit given on the command line, as bdev_set_qos_limit would set it.
    expect(bdevs.find((b) => b.name === 'z0')).toMatchObject({ assigned_rate_limits: { rw_ios_per_sec: 50, rw_mbytes_per_sec: 0 } });

    // What an orchestrator is told when it gets it wrong.
    expect(await rpc('vhost_create_blk_controller', { ctrlr: 'whole', dev_name: 'f0' }, true)).toMatch(/bdev 'f0' is claimed for writing by split f0; use that, or export 'f0' with readonly=on/);
    await rpc('vhost_create_blk_controller', { ctrlr: 'whole-ro', dev_name: 'f0', readonly: true });
    expect(await rpc('bdev_aio_delete', { name: 'f0' }, true)).toMatch(/claimed by split f0, vhost controller whole-ro/);
    expect(await rpc('bdev_split_delete', { base_bdev: 'f0' }, true)).toMatch(/split f0 is in use: f0p1 by vhost controller f0p1; f0p2 by vhost controller f0p2/);
    expect(await rpc('bdev_delete', { name: 'f0p3' }, true)).toMatch(/one of the bdevs of split f0, deleted together: bdev_split_delete f0/);
    await rpc('vhost_delete_controller', { ctrlr: 'whole-ro' });

    // A passthru made at run time on the last part, exported: it survives a SIGKILL, after the split it is built on.
    expect(await rpc('bdev_passthru_create', { base_bdev_name: 'f0p3', name: 'pt3' })).toBe('pt3');
    await rpc('vhost_create_blk_controller', { ctrlr: 'pt3', dev_name: 'pt3' });
    const w3 = await qemuIo(join(dir, 'pt3'), 'write -P 0x33 4k 64k');
    expect(w3.stdout, w3.stderr).toMatch(/wrote 65536\/65536 bytes at offset 4096/);
    expect(fileBytes(3 * PART + 4096, 65536).every((b) => b === 0x33)).toBe(true);
    const bdevCalls = ((await rpc('framework_get_config', { name: 'bdev' })) as { method: string }[]).map((c) => c.method);
    expect(bdevCalls).toEqual(['bdev_aio_create', 'bdev_split_create', 'bdev_null_create', 'bdev_error_create', 'bdev_passthru_create', 'bdev_set_qos_limit', 'bdev_wait_for_examine']);

    vdx.kill('SIGKILL');
    await exited(vdx);
    vdx = await serve();
    expect(out).toContain('restored what RPC calls had made before this vdx started');
    const again = (await rpc('bdev_get_bdevs')) as BdevJson[];
    expect(again.find((b) => b.name === 'pt3')).toMatchObject({ base_bdevs: ['f0p3'], claimed_by: ['vhost controller pt3'] });
    const r3 = await qemuIo(join(dir, 'pt3'), 'read -P 0x33 4k 64k');
    expect(r3.stdout + r3.stderr).not.toMatch(/Pattern verification failed/);
    expect(r3.stdout).toMatch(/read 65536\/65536 bytes at offset 4096/);

    // A delay made at run time on part 0: libblkio's reads take the configured latency, until it is changed.
    await rpc('bdev_delay_create', { base_bdev_name: 'f0p0', name: 'slow0', avg_read_latency: 50_000, p99_read_latency: 50_000, avg_write_latency: 0, p99_write_latency: 0 });
    await rpc('vhost_create_blk_controller', { ctrlr: 'slow0', dev_name: 'slow0' });
    const timed = async (reads: number) => {
      const t0 = performance.now();
      const rr = await qemuIo(join(dir, 'slow0'), ...Array.from({ length: reads }, (_, i) => `read ${i * 4096} 4k`));
      expect(rr.stdout, rr.stderr).toMatch(/read 4096\/4096 bytes/);
      return performance.now() - t0;
    };
    const fast = await timed(1);
    const slow = await timed(21);
    // Twenty more reads, each held 50 ms: 1 s more (less a margin for qemu-io's own start-up varying).
    expect(slow - fast).toBeGreaterThan(800);
    await rpc('bdev_delay_update_latency', { delay_bdev_name: 'slow0', latency_type: 'avg_read', latency_us: 0 });
    expect(await rpc('bdev_delay_update_latency', { delay_bdev_name: 'slow0', latency_type: 'avg_write', latency_us: 10 }, true)).toMatch(/p99-write-latency=0 is below avg-write-latency=10/);
    const listed = ((await rpc('bdev_get_bdevs', { name: 'slow0' })) as BdevJson[])[0]!;
    expect(listed.driver_specific.delay).toMatchObject({ base_bdev_name: 'f0p0', avg_read_latency: 0, p99_read_latency: 50_000 });
    const undelayed = await timed(21);
    expect(undelayed).toBeLessThan(slow - 500);
    await rpc('vhost_delete_controller', { ctrlr: 'slow0' });
    await rpc('bdev_delay_delete', { name: 'slow0' });

    // QoS on part 1 (exported): 100 I/O per second make 51 reads take half a second, until lifted.
    const reads = async (n: number) => {
      const t0 = performance.now();
      const rr = await qemuIo(join(dir, 'p1.sock'), ...Array.from({ length: n }, (_, i) => `read ${i * 4096} 4k`));
      expect(rr.stdout, rr.stderr).toMatch(/read 4096\/4096 bytes/);
      return performance.now() - t0;
    };
    const base1 = await reads(1);
    await rpc('bdev_set_qos_limit', { name: 'f0p1', rw_ios_per_sec: 100 });
    expect(((await rpc('bdev_get_bdevs', { name: 'f0p1' })) as { assigned_rate_limits: Record<string, number> }[])[0]!.assigned_rate_limits).toEqual({ rw_ios_per_sec: 100, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 0, w_mbytes_per_sec: 0 });
    const limited = await reads(51);
    expect(limited - base1).toBeGreaterThan(400);
    expect(((await rpc('framework_get_config', { name: 'bdev' })) as { method: string; params: Record<string, unknown> }[]).find((c) => c.method === 'bdev_set_qos_limit')?.params).toMatchObject({ name: 'f0p1', rw_ios_per_sec: 100 });
    await rpc('bdev_set_qos_limit', { name: 'f0p1', rw_ios_per_sec: 0 });
    const lifted = await reads(51);
    expect(lifted).toBeLessThan(limited - 300);
    expect(await rpc('bdev_set_qos_limit', { name: 'f0p1' }, true)).toMatch(/give at least one of rw_ios_per_sec, rw_mbytes_per_sec, r_mbytes_per_sec, w_mbytes_per_sec/);

    // An error bdev on part 0: the injected read fails for libblkio, the next one passes; a held
    // write completes once the injection is cleared.
    expect(await rpc('bdev_error_create', { base_name: 'f0p0' })).toBe('EE_f0p0');
    await rpc('vhost_create_blk_controller', { ctrlr: 'ee0', dev_name: 'EE_f0p0' });
    await rpc('bdev_error_inject_error', { name: 'EE_f0p0', io_type: 'read', error_type: 'failure', num: 1 });
    const failed = await qemuIo(join(dir, 'ee0'), 'read 0 4k');
    expect(failed.stdout + failed.stderr).toMatch(/read failed: Input\/output error/);
    const passed = await qemuIo(join(dir, 'ee0'), 'read 0 4k');
    expect(passed.stdout, passed.stderr).toMatch(/read 4096\/4096 bytes at offset 0/);
    await rpc('bdev_error_inject_error', { name: 'EE_f0p0', io_type: 'write', error_type: 'pending', num: 1 });
    const stuck = qemuIo(join(dir, 'ee0'), 'write -P 0x44 0 4k');
    // The injection is used up once the write arrived: from then on it is held.
    const injected = async () => (((await rpc('bdev_get_bdevs', { name: 'EE_f0p0' })) as BdevJson[])[0]!.driver_specific.error as { injected: Record<string, unknown> }).injected;
    for (let i = 0; i < 100 && (await injected()).write !== undefined; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await injected()).toEqual({});
    await new Promise((r) => setTimeout(r, 300));
    expect(fileBytes(0, 4096).every((b) => b === 0)).toBe(true); // held: not written yet
    await rpc('bdev_error_inject_error', { name: 'EE_f0p0', io_type: 'clear' });
    const released = await stuck;
    expect(released.stdout, released.stderr).toMatch(/wrote 4096\/4096 bytes at offset 0/);
    expect(fileBytes(0, 4096).every((b) => b === 0x44)).toBe(true);
    expect(await rpc('bdev_error_inject_error', { name: 'EE_f0p0', io_type: 'write', error_type: 'corrupt_data', corrupt_value: 1 }, true)).toMatch(/corrupt_data applies to reads here/);
    await rpc('vhost_delete_controller', { ctrlr: 'ee0' });
    await rpc('bdev_error_delete', { name: 'EE_f0p0' });

    // SPDK's own client drives the same methods, where it is installed.
    if (existsSync(SPDK_RPC)) {
      const py = (...a: string[]) => run('python3', [SPDK_RPC, '-s', sock, ...a], { timeoutMs: 20_000 });
      await rpc('vhost_delete_controller', { ctrlr: 'pt3' });
      expect((await py('bdev_passthru_delete', 'pt3')).code).toBe(0);
      const made = await py('bdev_split_create', 'f0p3', '2');
      expect(made.code, made.stderr).toBe(0);
      expect(made.stdout).toMatch(/f0p3p0\s+f0p3p1/);
      expect((await py('bdev_split_delete', 'f0p3')).code).toBe(0);
      const dl = await py('bdev_delay_create', '-b', 'f0p3', '-d', 'd3', '-r', '10', '-t', '20', '-w', '30', '-n', '40');
      expect(dl.code, dl.stderr).toBe(0);
      expect((await py('bdev_delay_update_latency', 'd3', 'p99_write', '50')).code).toBe(0);
      const shown = JSON.parse((await py('bdev_get_bdevs', '-b', 'd3')).stdout) as BdevJson[];
      expect(shown[0]!.driver_specific.delay).toMatchObject({ avg_read_latency: 10, p99_read_latency: 20, avg_write_latency: 30, p99_write_latency: 50 });
      expect((await py('bdev_delay_delete', 'd3')).code).toBe(0);
      expect((await py('bdev_error_create', 'f0p3')).code).toBe(0);
      const ij = await py('bdev_error_inject_error', 'EE_f0p3', 'read', 'failure', '-n', '5');
      expect(ij.code, ij.stderr).toBe(0);
      const ee = JSON.parse((await py('bdev_get_bdevs', '-b', 'EE_f0p3')).stdout) as BdevJson[];
      expect(ee[0]!.driver_specific.error).toEqual({ base_bdev: 'f0p3', injected: { read: { error_type: 'failure', remaining: 5 } } });
      expect((await py('bdev_error_delete', 'EE_f0p3')).code).toBe(0);
      const q = await py('bdev_set_qos_limit', 'f0p3', '--rw-ios-per-sec', '2000', '--r-mbytes-per-sec', '10');
      expect(q.code, q.stderr).toBe(0);
      const shownQ = JSON.parse((await py('bdev_get_bdevs', '-b', 'f0p3')).stdout) as { assigned_rate_limits: Record<string, number> }[];
      expect(shownQ[0]!.assigned_rate_limits).toEqual({ rw_ios_per_sec: 2000, rw_mbytes_per_sec: 0, r_mbytes_per_sec: 10, w_mbytes_per_sec: 0 });
    }
    vdx.kill('SIGTERM');
    expect(await exited(vdx)).toBe(0);
  }, 180_000);
});

describe('bdev modules (--bdev-module, "modules" in a config file)', () => {
  test('the example crc module catches a corrupted read below it; a module that throws breaks only its own disk, named; a broken module file is refused at start', async () => {
    const disk = join(dir, 'crc.img');
    writeFileSync(disk, '');
    truncateSync(disk, 16 * MiB);
    const cfg = join(dir, 'modules.json');
    writeFileSync(
      cfg,
      JSON.stringify({
        // relative to the config file
        modules: [relative(dir, join(REPO, 'contrib/bdev-modules/crc.mjs'))],
        bdevs: [
          { type: 'file', name: 'g0', path: disk, direct: 'off' },
          { type: 'error', name: 'EE_g0', base: 'g0' },
          { type: 'crc', name: 'c0', base: 'EE_g0' },
          { type: 'null', name: 'n1', size: '1M' },
        ],
        exports: [{ type: 'vhost-user', bdev: 'c0', socket: join(dir, 'c0.sock') }],
      }),
    );
    const msock = join(dir, 'm-rpc.sock');
    const v = await serveVdx(['--config', cfg, '--bdev-module', join(REPO, 'test/e2e/fixtures/throwing-bdev.mjs'), '--bdev', 'throwing:name=t1,base=n1', '--export', `vhost-user:bdev=t1,socket=${join(dir, 't1.sock')}`, '--rpc-socket', msock, '--state-dir', join(dir, 'mstate'), '--log-format', 'json']);
    const p = v.proc;
    expect(v.log()).toContain('"msg":"serving 5 bdevs, 2 exports');
    const mrpc = async (method: string, params: Record<string, unknown> = {}) => {
      const r = await run(process.execPath, [MAIN, 'rpc', '--rpc-socket', msock, method, JSON.stringify(params)], { timeoutMs: 20_000 });
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as unknown;
    };
    const c0 = join(dir, 'c0.sock');
    const w = await qemuIo(c0, 'write -P 0x5a 0 64k');
    expect(w.stdout, w.stderr).toMatch(/wrote 65536\/65536 bytes at offset 0/);
    const ok = await qemuIo(c0, 'read -P 0x5a 0 64k');
    expect(ok.stdout + ok.stderr).not.toMatch(/Pattern verification failed|error/i);
    // One byte of block 8 comes back wrong from below: the crc layer fails that read.
    await mrpc('bdev_error_inject_error', { name: 'EE_g0', io_type: 'read', error_type: 'corrupt_data', num: 1, corrupt_offset: 8 * 512 + 3, corrupt_value: 0x10 });
    const bad = await qemuIo(c0, 'read -P 0x5a 0 64k');
    expect(bad.stdout + bad.stderr).toMatch(/read failed: Input\/output error/);
    for (let i = 0; i < 50 && !v.log().includes('read back with CRC-32'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(v.log()).toMatch(/crc c0: block 8 read back with CRC-32 [0-9a-f]+, written with [0-9a-f]+; the read fails with EIO/);
    const again = await qemuIo(c0, 'read -P 0x5a 0 64k');
    expect(again.stdout + again.stderr).not.toMatch(/Pattern verification failed|error/i);
    const listed = ((await mrpc('bdev_get_bdevs', { name: 'c0' })) as BdevJson[])[0]!;
    expect(listed.driver_specific.crc).toMatchObject({ base_bdev: 'EE_g0', mismatches: 1 });
    expect(listed).toMatchObject({ product_name: 'crc (example module)', base_bdevs: ['EE_g0'] });
    // A module's type over RPC, like a built-in one.
    await mrpc('bdev_null_create', { name: 'n2', num_blocks: 2048, block_size: 512 });
    expect(await mrpc('bdev_create', { type: 'crc', name: 'c2', keys: { base: 'n2' } })).toBe('c2');

    // The throwing module breaks its own disk, says which module, and vdx serves on.
    // (the client's write never completes on a broken queue: it is given 5 s)
    const t = await runInUserland(['qemu-io', '-c', 'write 0 4k', '--image-opts', `driver=virtio-blk-vhost-user,path=${join(dir, 't1.sock')},cache.direct=on`], 5000);
    expect(t.stdout).not.toMatch(/wrote 4096\/4096/);
    for (let i = 0; i < 50 && !v.log().includes('this module throws on writes'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(v.log()).toMatch(/queue poll threw \(bdev module [^)]*throwing-bdev\.mjs, type throwing\): this module throws on writes/);
    const still = await qemuIo(c0, 'read -P 0x5a 0 64k');
    expect(still.stdout + still.stderr).not.toMatch(/Pattern verification failed|error/i);
    expect(await mrpc('spdk_get_version')).toMatchObject({ version: expect.any(String) });
    p.kill('SIGTERM');
    expect(await exited(p)).toBe(0);

    // A file that is not a bdev module: refused before anything starts, saying what is missing.
    const r = await run(process.execPath, [MAIN, 'serve', '--bdev-module', join(REPO, 'test/e2e/fixtures/incomplete-bdev.mjs'), '--rpc-socket', 'none'], { timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--bdev-module .*incomplete-bdev\.mjs \(type incomplete\): open\(\) is missing/);
    const r2 = await run(process.execPath, [MAIN, 'serve', '--bdev-module', join(dir, 'nowhere.mjs'), '--rpc-socket', 'none'], { timeoutMs: 20_000 });
    expect(r2.code).toBe(2);
    expect(r2.stderr).toMatch(/--bdev-module .*nowhere\.mjs: cannot load it/);
  }, 120_000);
});
