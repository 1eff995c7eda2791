// rbd bdevs managed over JSON-RPC on the host (no guest), against a one-node
// Ceph cluster on 127.0.0.1 (scripts/ceph/cluster.sh): SPDK's rpc.py v25.05
// registers a cluster and creates, lists, resizes and deletes rbd bdevs; a
// resize made with `rbd resize` elsewhere reaches vdx through librbd's update
// watch; save_config writes what replays; a cluster that does not answer
// fails a create after the stated connect timeout, naming it.
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { CACHE, REPO, exited, killTracked, run, spawnTracked, waitForPath } from './vm.js';

const MAIN = join(REPO, 'dist/cli/main.js');
const CLUSTER = join(REPO, 'scripts/ceph/cluster.sh');
const RPC_PY = process.env.VDX_SPDK_RPC ?? join(CACHE, 'spdk-rpc-25.05/scripts/rpc.py');
const HAVE_RPC_PY = existsSync(RPC_PY);
const MiB = 1 << 20;
// Ports of their own: nothing else on the machine should answer here.
const PORTS = { CEPH_MON_V2_PORT: '3320', CEPH_MON_V1_PORT: '6799' };

let dir = '';
let conf = '';
let env: NodeJS.ProcessEnv = {};
let proc: ChildProcess | undefined;
let sock = '';
let out = '';

const sh = async (cmd: string, args: string[], timeoutMs = 60_000) => {
  const r = await run(cmd, args, { env, timeoutMs });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return r.stdout;
};
const rpcPy = (...args: string[]) => run('python3', [RPC_PY, '-s', sock, ...args], { env, timeoutMs: 60_000 });
const vdxRpc = (...args: string[]) => run(process.execPath, [MAIN, 'rpc', '--rpc-socket', sock, ...args], { env, timeoutMs: 60_000 });
async function rpcJson(...args: string[]): Promise<unknown> {
  const r = HAVE_RPC_PY ? await rpcPy(...args) : await vdxRpc(...args);
  if (r.code !== 0) throw new Error(`${args[0]} exited ${r.code}: ${r.stdout}${r.stderr}`);
  const text = r.stdout.trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text; // rpc.py prints a string result bare
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vdx-rbd-rpc-'));
  env = { ...process.env, ...PORTS, CEPH_CONF: join(dir, 'ceph', 'ceph.conf') };
  await sh('bash', [CLUSTER, 'start', join(dir, 'ceph')], 120_000);
  conf = join(dir, 'ceph', 'ceph.conf');
  await sh('rbd', ['create', '--size', '64M', 'rbd/img0']);
  await sh('rbd', ['create', '--size', '32M', 'rbd/img1']);
  sock = join(dir, 'rpc.sock');
  // One bdev of its own, so vdx does not serve its start-up default (a vhost-user disk at /run/vdx).
  proc = spawnTracked(process.execPath, [MAIN, 'serve', '--bdev', 'null:name=n0,size=1M', '--rpc-socket', sock, '--vhost-socket-dir', dir, '--log-format', 'json'], { env });
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  await waitForPath(sock, proc, 'vdx serve', 30_000);
}, 180_000);

afterAll(async () => {
  if (proc && proc.exitCode === null) {
    proc.kill('SIGTERM');
    await exited(proc);
  }
  await killTracked();
  if (dir) {
    await run('bash', [CLUSTER, 'stop', join(dir, 'ceph')], { env, timeoutMs: 60_000 });
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);

describe('rbd bdevs over JSON-RPC', () => {
  test.skipIf(!HAVE_RPC_PY)("rpc.py: register a cluster, create, list, resize both ways, save_config, delete", async () => {
    expect(await rpcJson('bdev_rbd_register_cluster', 'c0', '--config-file', conf, '--user', 'admin')).toBe('c0');
    expect(await rpcJson('bdev_rbd_get_clusters_info', '-b', 'c0')).toEqual({ cluster_name: 'c0', user_id: 'admin', config_file: conf });
    expect(await rpcJson('bdev_rbd_create', '-b', 'r0', '-c', 'c0', 'rbd', 'img0', '512')).toBe('r0');
    // The same again is the same bdev (idempotent); another image under the name is refused.
    expect(await rpcJson('bdev_rbd_create', '-b', 'r0', '-c', 'c0', 'rbd', 'img0', '512')).toBe('r0');
    const clash = await rpcPy('bdev_rbd_create', '-b', 'r0', '-c', 'c0', 'rbd', 'img1', '512');
    expect(clash.code).not.toBe(0);
    expect(clash.stdout + clash.stderr).toMatch(/already exists with different parameters: image=img0 \(asked img1\)/);

    const [b] = (await rpcJson('bdev_get_bdevs', '-b', 'r0')) as { num_blocks: number; block_size: number; product_name: string; driver_specific: { rbd: Record<string, unknown> } }[];
    expect(b!.num_blocks * b!.block_size).toBe(64 * MiB);
    expect(b!.driver_specific.rbd).toMatchObject({ pool_name: 'rbd', rbd_name: 'img0' });

    // Unregistering a cluster in use is refused, naming the bdev.
    const busy = await rpcPy('bdev_rbd_unregister_cluster', 'c0');
    expect(busy.code).not.toBe(0);
    expect(busy.stdout + busy.stderr).toMatch(/used by bdev r0/);

    // vdx resizes the image ...
    expect(await rpcJson('bdev_rbd_resize', 'r0', '96')).toBe(true);
    expect(await sh('rbd', ['info', '--format', 'json', 'rbd/img0'])).toContain(`"size":${96 * MiB}`);
    // ... and a resize made elsewhere reaches vdx through librbd's update watch.
    await sh('rbd', ['resize', '--size', '128M', 'rbd/img0']);
    let size = 0;
    for (let i = 0; i < 100 && size !== 128 * MiB; i++) {
      const [x] = (await rpcJson('bdev_get_bdevs', '-b', 'r0')) as { num_blocks: number; block_size: number }[];
      size = x!.num_blocks * x!.block_size;
      if (size !== 128 * MiB) await new Promise((r) => setTimeout(r, 100));
    }
    expect(size).toBe(128 * MiB);
    expect(out).toMatch(/bdev resized/);

    const saved = (await rpcJson('save_config')) as { subsystems: { subsystem: string; config: { method: string; params: Record<string, unknown> }[] }[] };
    const bdevCfg = saved.subsystems.find((s) => s.subsystem === 'bdev')!.config.filter((c) => c.method !== 'bdev_null_create');
    expect(bdevCfg.map((c) => c.method), JSON.stringify(bdevCfg)).toEqual(['bdev_rbd_register_cluster', 'bdev_rbd_create', 'bdev_wait_for_examine']);
    expect(bdevCfg[1]!.params).toMatchObject({ name: 'r0', pool_name: 'rbd', rbd_name: 'img0', block_size: 512, user_id: 'admin', config_file: conf });

    // rpc.py prints nothing for these; the exit status says.
    await rpcJson('bdev_rbd_delete', 'r0');
    await rpcJson('bdev_rbd_unregister_cluster', 'c0');
    expect(await rpcJson('bdev_rbd_get_clusters_info')).toEqual([]);

    // The saved config replays into a fresh daemon: same bdev, same size.
    const cfgPath = join(dir, 'saved.json');
    writeFileSync(cfgPath, JSON.stringify(saved));
    const sock2 = join(dir, 'rpc2.sock');
    const p2 = spawnTracked(process.execPath, [MAIN, 'serve', '--config', cfgPath, '--rpc-socket', sock2, '--vhost-socket-dir', dir, '--log-format', 'json'], { env });
    let out2 = '';
    p2.stderr?.on('data', (d: Buffer) => (out2 += d.toString()));
    try {
      await waitForPath(sock2, p2, 'vdx serve --config', 60_000);
      const r = await run('python3', [RPC_PY, '-s', sock2, 'bdev_get_bdevs', '-b', 'r0'], { env, timeoutMs: 60_000 });
      expect(r.code, out2).toBe(0);
      const [x] = JSON.parse(r.stdout) as { num_blocks: number; block_size: number; uuid: string }[];
      expect(x!.num_blocks * x!.block_size).toBe(128 * MiB);
      expect(x!.uuid).toBe(bdevCfg[1]!.params.uuid);
    } finally {
      p2.kill('SIGTERM');
      await exited(p2);
    }
  }, 240_000);

  test('vdx rpc: bdev_create with vdx keys; a Ceph option vdx does not set is refused by name', async () => {
    const r = await vdxRpc('bdev_create', JSON.stringify({ type: 'rbd', name: 'r1', keys: { pool: 'rbd', image: 'img1', conf } }));
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const bad = await vdxRpc('bdev_rbd_create', JSON.stringify({ pool_name: 'rbd', rbd_name: 'img1', block_size: 512, config: { ms_type: 'async' } }));
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Ceph option 'ms_type' is not one vdx sets/);
    const del = await vdxRpc('bdev_delete', 'name=r1');
    expect(del.code, del.stderr).toBe(0);
  }, 120_000);

  test('a cluster that does not answer fails the create after the connect timeout, and the daemon goes on', async () => {
    const t0 = Date.now();
    const r = await vdxRpc('bdev_create', JSON.stringify({ type: 'rbd', name: 'dead', keys: { pool: 'rbd', image: 'x', 'mon-host': '127.0.0.1:1', conf: '/dev/null', 'connect-timeout': '3' } }));
    const took = Date.now() - t0;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/dead/);
    expect(took).toBeGreaterThan(2500);
    expect(took).toBeLessThan(30_000);
    const again = await vdxRpc('rpc_get_methods');
    expect(again.code).toBe(0);
  }, 120_000);
});
