#!/usr/bin/env node
// vdx alone under the bench's libblkio client (vhost-user, 4 KiB randread,
// client on CPU 0, give vdx --cpumask 0x2): IOPS, and from vdx's /metrics the
// reactor's passes, busy and idle time per I/O over the middle of the run.
//
//   node measure.mjs [VDX_CHECKOUT=../..] [null|malloc] [poll|wait] [QD=32] [SECONDS=4] [vdx serve options...]
//
// VDX_CHECKOUT is a checkout with dist/ built (for an experiment, a copy of
// dist/ with build/ and node_modules/ linked beside it). The client binary is
// the one `npm run bench` builds into the Debian 13 userland.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '../..');
const [checkout = REPO, backend = 'null', mode = 'poll', qd = '32', seconds = '4', ...extra] = process.argv.slice(2);
const bdev = { null: 'null:size=1G', malloc: 'malloc:size=1G,populate=on' }[backend];
if (!bdev) throw new Error(`backend must be null or malloc, not '${backend}'`);
if (Number(seconds) < 3) throw new Error('SECONDS must be at least 3: the first 1.5 s and the last 0.5 s are not counted');
const dir = mkdtempSync(join(tmpdir(), 'vdx-m-'));
const socket = join(dir, 'vdx.sock');
const port = 9190 + Math.floor(Math.random() * 50);
const vdx = spawn(process.execPath, [join(resolve(checkout), 'dist/cli/main.js'), 'serve', '--bdev', `${bdev},name=d0`, '--export', `vhost-user:bdev=d0,socket=${socket}`, '--rpc-socket', 'none', '--log-level', 'warn', '--metrics', `127.0.0.1:${port}`, ...extra], { stdio: 'inherit' });
while (!existsSync(socket)) await new Promise((r) => setTimeout(r, 50));

async function scrape() {
  const t = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const sum = (name) => t.split('\n').filter((l) => l.startsWith(name)).reduce((s, l) => s + Number(l.split(' ').pop()), 0);
  return {
    passes: sum('vdx_reactor_iterations_total'),
    busy: sum('vdx_reactor_busy_seconds_total'),
    idle: sum('vdx_reactor_idle_seconds_total'),
    sleeps: sum('vdx_reactor_sleeps_total'),
    ios: sum('node_disk_reads_completed_total{'),
  };
}

const client = spawn('taskset', ['-c', '0', join(REPO, 'scripts/vm/in-userland.sh'), '/usr/local/bin/vdx-blkio-bench', 'virtio-blk-vhost-user', socket, 'read', qd, '1', seconds, String(1 << 30), mode]);
let out = '';
client.stdout.on('data', (d) => (out += d));
client.stderr.on('data', (d) => process.stderr.write(d));
const exited = new Promise((r) => client.once('exit', r));
await new Promise((r) => setTimeout(r, 1500));
const a = await scrape();
const t0 = performance.now();
await new Promise((r) => setTimeout(r, (Number(seconds) - 2) * 1000));
const b = await scrape();
const dt = (performance.now() - t0) / 1000;
await exited;
vdx.kill('SIGINT');
await new Promise((r) => vdx.once('exit', r));
const ios = b.ios - a.ios;
const perIo = (k) => (((b[k] - a[k]) * 1e9) / ios).toFixed(0);
console.log(
  `${backend} ${mode} qd${qd}: ${(ios / dt / 1e3).toFixed(0)} k IOPS; I/O per pass ${(ios / (b.passes - a.passes)).toFixed(2)}; ` +
    `busy ns/IO ${perIo('busy')}; idle ns/IO ${perIo('idle')}; sleeps per 1000 I/O ${(((b.sleeps - a.sleeps) * 1e3) / ios).toFixed(2)} | client: ${out.trim().split('\n').pop()}`,
);
