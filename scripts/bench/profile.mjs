#!/usr/bin/env node
// Profile vdx under one benchmark load: vdx runs with node --cpu-prof (every
// thread, reactors included), the libblkio client drives one export, and the
// top self-time functions of each profiled thread are printed. As in
// run.mjs --pin, the client runs on CPU 0 and vdx's reactor on CPU 1.
//
//   node scripts/bench/profile.mjs [backend=malloc] [rw=read] [qd=32] [seconds=4] [client=poll]
// backend nbd serves the bench file through qemu-nbd on a unix socket, as run.mjs does.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const [backend = 'malloc', rw = 'read', qd = '32', seconds = '4', client = 'poll'] = process.argv.slice(2);
const FILE_IMG = '/var/tmp/vdx-bench.img';
const dir = mkdtempSync(join(tmpdir(), 'vdx-prof-'));
const nbdSocket = join(dir, 'nbd.sock');
const bdev = { null: 'null:size=1G', malloc: 'malloc:size=1G,populate=on', file: `file:path=${FILE_IMG},direct=on`, nbd: `nbd:path=${nbdSocket}` }[backend];
if (!bdev) throw new Error(`backend must be null, malloc, file or nbd, not '${backend}'`);
if (!['read', 'write'].includes(rw)) throw new Error(`rw must be read or write, not '${rw}'`);
if (!['poll', 'wait'].includes(client)) throw new Error(`client must be poll or wait, not '${client}'`);
if ((backend === 'file' || backend === 'nbd') && !existsSync(FILE_IMG)) throw new Error(`${FILE_IMG} is missing: npm run bench makes it`);
const server = backend === 'nbd' ? spawn('qemu-nbd', ['-f', 'raw', '-k', nbdSocket, '-t', '-e', '8', '--cache=none', '--aio=io_uring', FILE_IMG], { stdio: 'inherit' }) : undefined;
while (server && !existsSync(nbdSocket)) await new Promise((r) => setTimeout(r, 50));
const socket = join(dir, 'vdx.sock');
const vdx = spawn(process.execPath, ['--cpu-prof', '--cpu-prof-interval', '100', '--cpu-prof-dir', dir, join(REPO, 'dist/cli/main.js'), 'serve', '--bdev', `${bdev},name=d0`, '--export', `vhost-user:bdev=d0,socket=${socket}`, '--rpc-socket', 'none', '--log-level', 'warn', '--cpumask', '0x2'], { stdio: 'inherit' });
while (!existsSync(socket)) await new Promise((r) => setTimeout(r, 50));
const out = execFileSync('taskset', ['-c', '0', join(REPO, 'scripts/vm/in-userland.sh'), '/usr/local/bin/vdx-blkio-bench', 'virtio-blk-vhost-user', socket, rw, qd, '1', seconds, String(1 << 30), client], { encoding: 'utf8' });
process.stdout.write(`client: ${out.trim().split('\n').pop()}\n`);
vdx.kill('SIGINT');
await new Promise((r) => vdx.once('exit', r));
server?.kill('SIGTERM');
for (const f of readdirSync(dir).filter((n) => n.endsWith('.cpuprofile'))) {
  const p = JSON.parse(readFileSync(join(dir, f), 'utf8'));
  const self = new Map();
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const dt = new Map();
  for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  let total = 0;
  for (const [id, us] of dt) {
    const n = byId.get(id);
    const key = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + us);
    total += us;
  }
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, 15);
  if (!top.some(([k]) => k.includes('reactor'))) continue; // the main thread mostly sleeps
  process.stdout.write(`\n${f} (${(total / 1e6).toFixed(1)} s sampled)\n`);
  for (const [k, us] of top) process.stdout.write(`${((100 * us) / total).toFixed(1).padStart(5)} %  ${k}\n`);
}
process.stdout.write(`\nprofiles in ${dir}\n`);
