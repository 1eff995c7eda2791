// What RPC calls made survives vdx (host, no guest): a bdev and a vhost-user
// controller created over the socket come back after a SIGKILL and after a
// stop for an upgrade (SIGUSR2), with libblkio (qemu-io from the Debian 13
// userland) reading across the restart what it wrote before; the ordinary
// stop (SIGTERM) forgets them; a running-state file that is not one is
// refused naming it.
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { REPO, exited, killTracked, run, runInUserland, serveVdx } from './vm.js';

const MAIN = join(REPO, 'dist/cli/main.js');
const dir = mkdtempSync(join(tmpdir(), 'vdx-restore-'));
const sock = join(dir, 'rpc.sock');
const stateDir = join(dir, 'state');
afterAll(async () => {
  await killTracked();
  rmSync(dir, { recursive: true, force: true });
});

let out = '';
/** Start vdx with the same command every time; resolve once it says it serves. */
async function serve(): Promise<ChildProcess> {
  const v = await serveVdx(['--bdev', 'null:name=n0,size=1M', '--rpc-socket', sock, '--vhost-socket-dir', dir, '--state-dir', stateDir, '--log-format', 'json']);
  out = v.log();
  v.proc.stderr?.on('data', () => (out = v.log()));
  return v.proc;
}
const rpc = async (method: string, ...params: string[]) => {
  const r = await run(process.execPath, [MAIN, 'rpc', '--rpc-socket', sock, method, ...params], { timeoutMs: 20_000 });
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as unknown;
};
const qemuIo = (...cmds: string[]) => runInUserland(['qemu-io', ...cmds.flatMap((c) => ['-c', c]), '--image-opts', `driver=virtio-blk-vhost-user,path=${join(dir, 'vhost.0')},cache.direct=on`]);
const names = (list: unknown) => (list as { name?: string; ctrlr?: string }[]).map((x) => x.name ?? x.ctrlr).sort();

describe('RPC-made configuration across restarts', () => {
  test('back after a SIGKILL and an upgrade stop, with its data; forgotten by the ordinary stop', async () => {
    const img = join(dir, 'disk.img');
    writeFileSync(img, '');
    truncateSync(img, 32 << 20);
    let vdx = await serve();
    await rpc('bdev_aio_create', `filename=${img}`, 'name=d0', 'block_size=512');
    await rpc('vhost_create_blk_controller', 'ctrlr=vhost.0', 'dev_name=d0');
    await rpc('vhost_controller_set_coalescing', 'ctrlr=vhost.0', 'delay_base_us=20', 'iops_threshold=90000');
    // Kept: what RPC calls made; not what the command line makes again itself.
    const kept = readFileSync(join(stateDir, readdirSync(stateDir).find((f) => f.startsWith('running-'))!), 'utf8');
    expect(kept).toContain('"d0"');
    expect(kept).toContain('"vhost.0"');
    expect(kept).not.toContain('"n0"');
    const w = await qemuIo('write -P 0x3c 0 64k');
    expect(w.stdout, w.stderr).toMatch(/wrote 65536\/65536 bytes at offset 0/);

    vdx.kill('SIGKILL');
    await exited(vdx);
    vdx = await serve();
    expect(out).toContain('restored what RPC calls had made before this vdx started');
    expect(names(await rpc('bdev_get_bdevs'))).toEqual(['d0', 'n0']);
    expect(names(await rpc('vhost_get_controllers'))).toEqual(['vhost.0']);
    expect(await rpc('vhost_get_controllers')).toMatchObject([{ delay_base_us: 20, iops_threshold: 90000 }]);
    const r = await qemuIo('read -P 0x3c 0 64k');
    expect(r.stdout + r.stderr).not.toMatch(/Pattern verification failed|error/i);
    expect(r.stdout).toMatch(/read 65536\/65536 bytes at offset 0/);

    await rpc('bdev_malloc_create', 'name=m1', 'num_blocks=2048', 'block_size=512');
    vdx.kill('SIGUSR2');
    expect(await exited(vdx)).toBe(0);
    vdx = await serve();
    expect(names(await rpc('bdev_get_bdevs'))).toEqual(['d0', 'm1', 'n0']);
    expect(names(await rpc('vhost_get_controllers'))).toEqual(['vhost.0']);

    vdx.kill('SIGTERM');
    expect(await exited(vdx)).toBe(0);
    expect(readdirSync(stateDir)).toEqual([]);
    vdx = await serve();
    expect(names(await rpc('bdev_get_bdevs'))).toEqual(['n0']);
    expect(names(await rpc('vhost_get_controllers'))).toEqual([]);
    vdx.kill('SIGKILL');
    await exited(vdx);
  }, 120_000);

  test('a running-state file that is not one: refused naming it, and vdx does not start', async () => {
    const file = join(stateDir, readdirSync(stateDir).find((f) => f.startsWith('running-')) ?? `running-${sock.replace(/^\/+/, '').replace(/[^A-Za-z0-9._-]+/g, '-')}.json`);
    writeFileSync(file, '{"subsystems": [');
    const r = await run(process.execPath, [MAIN, 'serve', '--bdev', 'null:name=n0,size=1M', '--rpc-socket', sock, '--vhost-socket-dir', dir, '--state-dir', stateDir, '--log-format', 'json'], { timeoutMs: 20_000 });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${file}: not JSON`);
    expect(r.stderr).toContain('remove it to start from the command line alone');
    expect(existsSync(file)).toBe(true);
  });
});
