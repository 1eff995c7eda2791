// nbd bdevs managed over JSON-RPC on the host (no guest), against a real
// qemu-nbd on a unix socket, through vdx's own client (SPDK has no NBD client
// method, so rpc.py has none to call): create, the same again, another server
// under the name refused, listing, the saved config, delete; a server that is not
// there fails the create with its errno and a message naming it.
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { NbdServer } from './nbd-servers.js';
import { REPO, exited, killTracked, run, spawnTracked, waitForPath } from './vm.js';

const MAIN = join(REPO, 'dist/cli/main.js');
const MiB = 1 << 20;
let dir = '';
let sock = '';
let server: NbdServer;
let proc: ChildProcess | undefined;

const vdxRpc = (...args: string[]) => run(process.execPath, [MAIN, 'rpc', '--rpc-socket', sock, ...args], { timeoutMs: 30_000 });
async function ok(...args: string[]): Promise<unknown> {
  const r = await vdxRpc(...args);
  if (r.code !== 0) throw new Error(`${args[0]} exited ${r.code}: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vdx-nbd-rpc-'));
  const img = join(dir, 'disk.img');
  writeFileSync(img, '');
  truncateSync(img, 32 * MiB);
  server = new NbdServer({ kind: 'qemu-nbd', socket: join(dir, 'nbd.sock'), args: ['-f', 'raw', '-x', 'exp0', img], logName: 'nbd-rpc-qemu' });
  await server.start();
  sock = join(dir, 'rpc.sock');
  // One bdev of its own, so vdx does not serve its start-up default.
  proc = spawnTracked(process.execPath, [MAIN, 'serve', '--bdev', 'null:name=n9,size=1M', '--rpc-socket', sock, '--vhost-socket-dir', dir, '--log-format', 'json']);
  await waitForPath(sock, proc, 'vdx serve', 30_000);
}, 60_000);

afterAll(async () => {
  if (proc && proc.exitCode === null) {
    proc.kill('SIGTERM');
    await exited(proc);
  }
  await server?.stop();
  await killTracked();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('nbd bdevs over JSON-RPC', () => {
  test('bdev_nbd_create, idempotent retry, a clash refused, bdev_get_bdevs, framework_get_config, bdev_nbd_delete', async () => {
    const path = join(dir, 'nbd.sock');
    expect(await ok('bdev_nbd_create', 'name=n0', `path=${path}`, 'export_name=exp0', 'reconnect_timeout=5')).toBe('n0');
    expect(await ok('bdev_nbd_create', 'name=n0', `path=${path}`, 'export_name=exp0', 'reconnect_timeout=5')).toBe('n0');
    const clash = await vdxRpc('bdev_nbd_create', 'name=n0', `path=${path}`, 'export_name=exp0', 'reconnect_timeout=6');
    expect(clash.code).toBe(1);
    expect(clash.stderr).toMatch(/already exists with different parameters: reconnect-timeout=5 \(asked 6\)/);

    const [b] = (await ok('bdev_get_bdevs', 'name=n0')) as { num_blocks: number; block_size: number; product_name: string; driver_specific: { nbd: Record<string, unknown> } }[];
    expect(b!.num_blocks * b!.block_size).toBe(32 * MiB);
    expect(b!.product_name).toBe('NBD disk');
    expect(b!.driver_specific.nbd).toMatchObject({ uri: `nbd+unix:///exp0?socket=${path}`, export: 'exp0', reconnect_timeout: 5 });

    // What save_config writes for the bdev subsystem (rpc.py's save_config asks this per subsystem).
    const saved = (await ok('framework_get_config', 'name=bdev')) as { method: string; params: Record<string, unknown> }[];
    const entry = saved.find((c) => c.method === 'bdev_nbd_create');
    expect(entry?.params).toMatchObject({ name: 'n0', uri: `nbd+unix:///exp0?socket=${path}`, reconnect_timeout: 5, read_only: false });

    expect(await ok('bdev_nbd_delete', 'name=n0')).toBe(true);
    const gone = await vdxRpc('bdev_get_bdevs', 'name=n0');
    expect(gone.code).toBe(1);
  }, 60_000);

  test('a server that is not there: the create fails naming it, and the daemon goes on', async () => {
    const r = await vdxRpc('bdev_nbd_create', 'name=n1', `path=${join(dir, 'nobody.sock')}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot connect to unix socket .*nobody\.sock/);
    expect(r.stderr).toMatch(/code -2\b/);
    expect((await vdxRpc('rpc_get_methods')).code).toBe(0);
  }, 60_000);
});
