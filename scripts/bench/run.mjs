#!/usr/bin/env node
// vdx vs qemu-storage-daemon, side by side in one run: the same libblkio client
// (scripts/bench/blkio-bench.c, run in the Debian 13 userland) against each
// peer's vhost-user-blk export, alternating the order every round, medians of
// the rounds. Writes results.md, results.json and chart.svg under results/.
//
//   npm run bench [-- --quick] [-- --seconds 3 --rounds 3 --out results/DIR] [-- --guest] [-- --packed]
// --guest adds vdx vs QSD over VDUSE inside the bench guest (fio on /dev/vdX).
// --packed adds packed vs split virtqueues with QEMU's vhost-user-blk-pci and fio in a guest.
// --memory adds resident memory with 2 reactors and 4 exports, all under load.
// --no-matrix skips the libblkio matrix (only the guest parts run).
// Narrow the matrix with --backends null,malloc --rws read --qds 1,32 --queues 1;
// --clients poll,wait picks how the client waits for completions: "poll" spins
// on the rings, "wait" sleeps until the daemon's interrupt, as a VM's guest does
// (default: both for the remote backends, poll for the others);
// passthru (vdx: passthru over malloc) shows the cost of one layer against vdx
// on the bare malloc bdev, run in the same rounds; crypt is vdx's crypt bdev over malloc against QSD's luks driver
// (aes-xts-plain64, 512-bit key) over the tmpfs file;
// the remote backends (rbd: a one-node Ceph cluster on 127.0.0.1 made by
// scripts/ceph/cluster.sh; nbd: qemu-nbd on a unix socket) serve both peers from
// the same image or export, and run at QD1/QD32 on one queue; `rbd bench` on the
// same image gives the store's own ceiling.
// pass options to vdx with --vdx-args "--idle-spin-us 50"; compare this tree with
// another vdx build instead of QSD with --ab DIR (a checkout with dist/ built;
// --ab . with --base-args "..." compares two settings of this build); add keys
// to vdx's export in the matrix with --export-keys "delay-base-us=50" (the
// base's: --base-export-keys).
// --peer spdk adds SPDK's vhost target as a third peer (--spdk DIR or VDX_SPDK:
// a built SPDK tree; scripts/bench/spdk.mjs): null and malloc, randread, QD1 and
// QD32, both clients, 5 rounds unless narrowed, the client pinned to CPU 0 and
// each daemon's one reactor/iothread to CPU 1 (--pin does that for any run);
// every row gets the per-I/O kicks, interrupts and daemon CPU, compared per
// round, and an idle row gives each daemon's CPU with a client connected.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { releaseHugepages, reserveHugepages, spdkCommand, spdkLeftovers, spdkVhost } from './spdk.mjs';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CACHE = process.env.VDX_CACHE ?? '/var/cache/vdx';
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const quick = args.includes('--quick');
const SPDK = opt('peer') === undefined ? undefined : opt('peer') === 'spdk' ? spdkVhost(opt('spdk') ?? process.env.VDX_SPDK) : (() => {
  throw new Error(`--peer: '${opt('peer')}' is not a peer the bench knows; use --peer spdk (qemu-storage-daemon always runs)`);
})();
/** Client on CPU 0, each daemon's one reactor/iothread on CPU 1, as SPDK's -m 0x2 has it. */
const PIN = SPDK !== undefined || args.includes('--pin');
const SECONDS = Number(opt('seconds', quick ? 2 : 3));
const ROUNDS = Number(opt('rounds', quick ? 1 : SPDK ? 5 : 3));
const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
const OUT = resolve(opt('out', join(REPO, 'results', `bench-${stamp}`)));
const SIZE = 1 << 30;

const list = (name, dflt) => (opt(name) === undefined ? dflt : opt(name).split(','));
const KNOWN_BACKENDS = ['null', 'malloc', 'file', 'rbd', 'nbd', 'passthru', 'crypt'];
const REMOTE = new Set(['rbd', 'nbd']);
/** Layers over malloc: their rows also run vdx on the bare malloc bdev ("bare"), in the same rounds, for the layer's own cost. */
const LAYERS = new Set(['passthru', 'crypt']);
/** What SPDK's peer serves: null and RAM (malloc). */
const SPDK_BACKENDS = new Set(['null', 'malloc']);
const BACKENDS = list('backends', quick || SPDK ? ['null', 'malloc'] : KNOWN_BACKENDS);
const RWS = list('rws', quick || SPDK ? ['read'] : ['read', 'write']);
const QDS = list('qds', quick || SPDK ? [1, 32] : [1, 32, 128]).map(Number);
const QUEUES = list('queues', quick || SPDK ? [1] : [1, 2]).map(Number);
const KNOWN_CLIENTS = ['poll', 'wait'];
const CLIENTS = opt('clients') === undefined ? (SPDK ? KNOWN_CLIENTS : undefined) : opt('clients').split(',');
for (const c of CLIENTS ?? []) if (!KNOWN_CLIENTS.includes(c)) throw new Error(`--clients: '${c}' is neither poll nor wait`);
const VDX_ARGS = (opt('vdx-args') ?? '').split(' ').filter(Boolean);
const BASE_ARGS = (opt('base-args') ?? opt('vdx-args') ?? '').split(' ').filter(Boolean);
/** more keys for vdx's vhost-user export in the matrix ("delay-base-us=50,iops-threshold=100000"), and for the base's */
const EXPORT_KEYS = opt('export-keys') ?? '';
const BASE_EXPORT_KEYS = opt('base-export-keys') ?? '';
const AB = opt('ab') === undefined ? undefined : resolve(opt('ab'));
for (const b of BACKENDS) if (!KNOWN_BACKENDS.includes(b)) throw new Error(`--backends: unknown backend '${b}'; known: ${KNOWN_BACKENDS.join(', ')}`);
for (const rw of RWS) if (!['read', 'write'].includes(rw)) throw new Error(`--rws: '${rw}' is neither read nor write`);
for (const n of [...QDS, ...QUEUES]) if (!Number.isInteger(n) || n < 1) throw new Error(`--qds/--queues take positive whole numbers, not '${n}'`);
if (AB && !existsSync(join(AB, 'dist/cli/main.js'))) throw new Error(`--ab ${AB}: no dist/cli/main.js there (run npm ci && npm run build in it)`);
const exportKeys = (peer) => {
  const k = peer === 'base' ? BASE_EXPORT_KEYS : EXPORT_KEYS;
  return k ? `,${k}` : '';
};

/** The second peer: qemu-storage-daemon, or with --ab another vdx build ("base"). */
const OTHER = AB ? 'base' : 'qsd';
const NAMES = {
  vdx: `vdx${EXPORT_KEYS ? ` (${EXPORT_KEYS})` : ''}`,
  qsd: 'QSD',
  spdk: 'SPDK',
  base: `vdx@${AB ? AB.split('/').pop() : ''}${BASE_ARGS.length ? ` (${BASE_ARGS.join(' ')})` : ''}${BASE_EXPORT_KEYS ? ` (${BASE_EXPORT_KEYS})` : ''}`,
};

// ---------------------------------------------------------------- setup

/** Build the client into the Debian 13 userland, where libblkio is; returns its path there. */
function client() {
  const inside = '/usr/local/bin/vdx-blkio-bench';
  const bin = join(CACHE, 'trixie-userland', inside);
  const src = join(REPO, 'scripts/bench/blkio-bench.c');
  if (!existsSync(bin) || statSync(bin).mtimeMs < statSync(src).mtimeMs) {
    mkdirSync(dirname(bin), { recursive: true });
    execFileSync('gcc', ['-O2', '-Wall', '-o', bin, src, '-ldl'], { stdio: 'inherit' });
  }
  return inside;
}

const FILE_IMG = '/var/tmp/vdx-bench.img';
const SHM_IMG = '/dev/shm/vdx-bench.img';
/** QSD's side of the crypt rows: a LUKS image on tmpfs, its payload allocated like SHM_IMG */
const LUKS_IMG = '/dev/shm/vdx-bench-luks.img';
const LUKS_SECRET = 'vdx-bench';
const KEY_FILE = join(tmpdir(), 'vdx-bench-crypt.key');
function images() {
  for (const p of [FILE_IMG, SHM_IMG]) {
    if (!existsSync(p) || statSync(p).size !== SIZE) execFileSync('fallocate', ['-l', String(SIZE), p]);
  }
  if (BACKENDS.includes('crypt')) {
    if (!existsSync(LUKS_IMG)) {
      execFileSync('qemu-img', ['create', '-q', '-f', 'luks', '--object', `secret,id=sec0,data=${LUKS_SECRET}`,
        '-o', 'key-secret=sec0,cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64,iter-time=10,preallocation=falloc', LUKS_IMG, String(SIZE)]);
    }
    if (!existsSync(KEY_FILE)) writeFileSync(KEY_FILE, randomBytes(64), { mode: 0o600 });
  }
}

// ---------------------------------------------------------------- remote stores

const RBD_IMAGE = 'vdx-bench';
/** Servers the remote backends need, started once for the whole run: { rbd: {dir, conf}, nbd: {dir, socket, child} }. */
const remote = {};

async function startRemote(backend) {
  if (remote[backend]) return remote[backend];
  const { mkdtempSync } = await import('node:fs');
  const dir = mkdtempSync(join(tmpdir(), `vdx-bench-${backend}-`));
  if (backend === 'rbd') {
    execFileSync('bash', [join(REPO, 'scripts/ceph/cluster.sh'), 'start', dir], { stdio: ['ignore', 'ignore', 'inherit'] });
    const conf = join(dir, 'ceph.conf');
    const env = { ...process.env, CEPH_CONF: conf };
    remote.rbd = { dir, conf, env };
    execFileSync('rbd', ['create', '--size', `${SIZE >> 20}M`, `rbd/${RBD_IMAGE}`], { env });
    // Written once end to end, so reads reach the OSD's objects instead of answering holes.
    execFileSync('rbd', ['bench', '--io-type', 'write', '--io-pattern', 'seq', '--io-size', '4M', '--io-total', String(SIZE), `rbd/${RBD_IMAGE}`], { env, stdio: 'ignore' });
  } else {
    const socket = join(dir, 'nbd.sock');
    // Shared by both peers in turn (-t: survive each disconnect), O_DIRECT on the bench file.
    const child = spawn('qemu-nbd', ['-f', 'raw', '-k', socket, '-t', '-e', '8', '--cache=none', '--aio=io_uring', '--discard=unmap', FILE_IMG], { stdio: ['ignore', 'ignore', 'pipe'] });
    remote.nbd = { dir, socket, child };
    await waitFor(socket, child);
  }
  return remote[backend];
}

async function stopRemote() {
  if (remote.rbd) {
    try {
      execFileSync('bash', [join(REPO, 'scripts/ceph/cluster.sh'), 'stop', remote.rbd.dir], { stdio: 'ignore' });
    } finally {
      rmSync(remote.rbd.dir, { recursive: true, force: true });
    }
  }
  if (remote.nbd) {
    remote.nbd.child.kill('SIGTERM');
    rmSync(remote.nbd.dir, { recursive: true, force: true });
  }
}

/** `rbd bench` 4 KiB random I/O on the bench image: the store's own ceiling, IOPS. */
function rbdBench(rw, threads) {
  const out = execFileSync('rbd', ['bench', '--io-type', rw, '--io-pattern', 'rand', '--io-size', '4K', '--io-threads', String(threads), '--io-total', String(Math.max(4000, 2000 * threads) * 4096), `rbd/${RBD_IMAGE}`], { env: remote.rbd.env, encoding: 'utf8' });
  const m = /elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops\/sec:\s*([\d.]+)/.exec(out);
  if (!m) throw new Error(`rbd bench printed no summary:\n${out.slice(-1000)}`);
  return Number(m[3]);
}

function peerCommand(peer, backend, socket, queues) {
  if (peer === 'bare') return peerCommand('vdx', 'malloc', socket, queues);
  if (peer === 'spdk') return spdkCommand(SPDK, backend, socket, SIZE);
  if (peer === 'vdx' || peer === 'base') {
    // malloc is populated like QSD's fallocated tmpfs file: both start with every page present.
    const bdevs = {
      null: ['null:size=1G,name=d0'],
      malloc: ['malloc:size=1G,populate=on,name=d0'],
      file: [`file:path=${FILE_IMG},direct=on,name=d0`],
      rbd: remote.rbd && [`rbd:pool=rbd,image=${RBD_IMAGE},conf=${remote.rbd.conf},name=d0`],
      nbd: remote.nbd && [`nbd:path=${remote.nbd.socket},name=d0`],
      passthru: ['malloc:size=1G,populate=on,name=m0', 'passthru:name=d0,base=m0'],
      crypt: ['malloc:size=1G,populate=on,name=m0', `crypt:name=d0,base=m0,key-file=${KEY_FILE}`],
    }[backend];
    const root = peer === 'base' ? AB : REPO;
    return [process.execPath, [join(root, 'dist/cli/main.js'), 'serve', ...bdevs.flatMap((b) => ['--bdev', b]), '--export', `vhost-user:bdev=d0,socket=${socket},num-queues=${queues}${exportKeys(peer)}`, '--rpc-socket', 'none', '--log-level', 'warn', '--log-format', 'json', ...(PIN ? ['--cpumask', '0x2'] : []), ...(peer === 'base' ? BASE_ARGS : VDX_ARGS)]];
  }
  const blockdev = {
    null: `null-co,node-name=d0,size=${SIZE}`,
    malloc: `file,node-name=d0,filename=${SHM_IMG},aio=io_uring`,
    file: `file,node-name=d0,filename=${FILE_IMG},aio=io_uring,cache.direct=on`,
    // cache.direct=on: librbd's cache off, as vdx's rbd bdev has it by default
    rbd: remote.rbd && `rbd,node-name=d0,pool=rbd,image=${RBD_IMAGE},conf=${remote.rbd.conf},cache.direct=on`,
    nbd: remote.nbd && `nbd,node-name=d0,server.type=unix,server.path=${remote.nbd.socket}`,
    passthru: `file,node-name=d0,filename=${SHM_IMG},aio=io_uring`,
  }[backend];
  const crypt = backend === 'crypt'
    ? ['--object', `secret,id=sec0,data=${LUKS_SECRET}`, '--blockdev', `file,node-name=f0,filename=${LUKS_IMG},aio=io_uring`, '--blockdev', 'luks,node-name=d0,file=f0,key-secret=sec0']
    : ['--blockdev', blockdev];
  // QSD 7.2 cannot pin an iothread by itself: the whole daemon goes to CPU 1 (its main loop is idle during I/O).
  return [PIN ? 'taskset' : 'qemu-storage-daemon', [...(PIN ? ['-c', '1', 'qemu-storage-daemon'] : []), '--object', 'iothread,id=io0', ...crypt, '--export', `vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${socket},writable=on,num-queues=${queues},iothread=io0`]];
}

/** Peak resident memory of a process (VmHWM), MiB. */
const peakRssMiB = (pid) => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

/** read and write syscalls the process has made: /proc/PID/io's syscr and syscw, all threads. */
const syscalls = (pid) => {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  return { r: Number(/syscr: (\d+)/.exec(io)[1]), w: Number(/syscw: (\d+)/.exec(io)[1]) };
};

const ticks = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]);
};

async function waitFor(path, child, ms = SPDK ? 60000 : 15000) {
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (child.exitCode !== null) throw new Error(`peer exited (${child.exitCode}) before listening`);
    if (Date.now() > end) throw new Error(`peer did not create ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Spawn a daemon and keep its stderr. use(label, body) runs `body(child)`, then
 * stops the daemon however that ended (SIGTERM; SIGKILL after 10 s, because
 * SPDK's vhost once spun on through two SIGTERMs and held a run) and waits
 * until it has gone and its stderr is read to the end; a failure is thrown
 * again only then, with what the daemon said, because a run blocks the event
 * loop (execFileSync) and its stderr arrives after.
 */
function daemon(cmd, argv) {
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const closed = new Promise((r) => child.once('close', r));
  return {
    child,
    async use(label, body) {
      let failure;
      try {
        return await body(child);
      } catch (e) {
        failure = e;
      } finally {
        child.kill('SIGTERM');
        const kill = setTimeout(() => child.kill('SIGKILL'), 10000);
        await closed;
        clearTimeout(kill);
      }
      throw new Error(`${label}${failure.message}\n${err.slice(-2000)}`);
    },
  };
}

/**
 * Start `peer` serving `backend` on a fresh socket, run `use(child, socket)`
 * once it listens, and stop it however that ends; a failure carries the
 * daemon's last words.
 */
async function withPeer(peer, backend, queues, what, use) {
  const dir = join(tmpdir(), `vdx-bench-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const socket = join(dir, `${peer}.sock`);
  rmSync(socket, { force: true });
  return daemon(...peerCommand(peer, backend, socket, queues)).use(`${peer} ${what}: `, async (child) => {
    await waitFor(socket, child);
    return use(child, socket);
  });
}

function runOne(bin, peer, cfg) {
  return withPeer(peer, cfg.backend, cfg.queues, JSON.stringify(cfg), (child, socket) => {
    const t0 = ticks(child.pid);
    const c0 = syscalls(child.pid);
    const s0 = performance.now();
    const userland = [join(REPO, 'scripts/vm/in-userland.sh'), bin, 'virtio-blk-vhost-user', socket, cfg.rw, String(cfg.qd), String(cfg.queues), String(SECONDS), String(SIZE), cfg.client];
    const out = execFileSync(PIN ? 'taskset' : userland[0], PIN ? ['-c', '0', ...userland] : userland.slice(1), {
      encoding: 'utf8',
      timeout: (SECONDS + 30) * 1000,
    });
    const wall = (performance.now() - s0) / 1000;
    const c1 = syscalls(child.pid);
    const r = JSON.parse(out.trim().split('\n').pop());
    r.daemon_cpu = (ticks(child.pid) - t0) / 100 / wall;
    r.daemon_rss_mib = peakRssMiB(child.pid);
    // Per request, over every request the client made (the measured ones and its drain).
    const ios = r.ios + cfg.qd * cfg.queues;
    if (r.ios > 0) {
      r.kicks_per_io = r.kicks >= 0 ? r.kicks / ios : NaN;
      // The daemon writes nothing but interrupts (eventfd) during I/O, and reads nothing but kicks.
      r.irqs_per_io = (c1.w - c0.w) / ios;
      r.kick_reads_per_io = (c1.r - c0.r) / ios;
      r.daemon_ns_per_io = (r.daemon_cpu * wall * 1e9) / ios;
    }
    return r;
  });
}

// ---------------------------------------------------------------- output

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function progress(done, total, label) {
  if (!process.stderr.isTTY) {
    process.stderr.write(`[${done}/${total}] ${label}\n`);
    return;
  }
  const w = 30;
  const fill = Math.round((done / total) * w);
  process.stderr.write(`\r[${'#'.repeat(fill)}${'.'.repeat(w - fill)}] ${done}/${total} ${label}`.padEnd(100));
  if (done === total) process.stderr.write('\n');
}

function chart(rows) {
  const W = 900;
  const barH = 14;
  const gap = 10;
  const left = 260;
  const max = Math.max(...rows.flatMap((r) => [r.vdx.iops, r[OTHER].iops]), 1);
  const h = rows.length * (2 * barH + gap) + 60;
  const bars = rows
    .map((r, i) => {
      const y = 40 + i * (2 * barH + gap);
      const wv = ((W - left - 80) * r.vdx.iops) / max;
      const wq = ((W - left - 80) * r[OTHER].iops) / max;
      return `<text x="${left - 8}" y="${y + barH + 4}" text-anchor="end" font-size="12">${r.label}</text>
<rect x="${left}" y="${y}" width="${wv.toFixed(1)}" height="${barH}" fill="#2a7ab9"/><text x="${left + wv + 4}" y="${y + 11}" font-size="10">${Math.round(r.vdx.iops / 1000)}k</text>
<rect x="${left}" y="${y + barH}" width="${wq.toFixed(1)}" height="${barH}" fill="#c0504d"/><text x="${left + wq + 4}" y="${y + barH + 11}" font-size="10">${Math.round(r[OTHER].iops / 1000)}k</text>`;
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${h}" font-family="sans-serif">
<text x="10" y="20" font-size="14">4 KiB random I/O, IOPS (medians of ${ROUNDS}): <tspan fill="#2a7ab9">vdx</tspan> vs <tspan fill="#c0504d">${AB ? NAMES.base : 'qemu-storage-daemon'}</tspan>, libblkio client</text>
${bars}
</svg>
`;
}

// ---------------------------------------------------------------- VDUSE in the guest

/**
 * Boot the 6.12 bench guest (TCG) to run `script` (under scripts/bench/) and
 * collect its "BENCH name value..." lines; `expected` of them fill the progress bar.
 */
async function benchGuest(script, label, expected, qemuArgs = []) {
  const { randomBytes } = await import('node:crypto');
  const { mkdtempSync } = await import('node:fs');
  const run = mkdtempSync(join(tmpdir(), 'vdx-bench-guest-'));
  const nonce = randomBytes(8).toString('hex');
  writeFileSync(join(run, 'script.sh'), `export VDX_SRC=/run/vdx-src VDX_CACHE=${CACHE} ROUNDS=${ROUNDS}\nexec bash "$VDX_SRC/scripts/bench/${script}"\n`);
  writeFileSync(join(run, 'mounts'), 'vdxsrc /run/vdx-src ro\n');
  const qemu = spawn('qemu-system-x86_64', [
    '-accel', 'tcg,thread=multi', '-smp', '2', '-m', '2048M', '-nographic', '-no-reboot', '-nic', 'none',
    '-kernel', join(CACHE, 'kernel/current/vmlinuz'), '-initrd', join(CACHE, 'initramfs.gz'),
    '-append', `console=ttyS0 quiet loglevel=4 panic=-1 vdx_nonce=${nonce} vdx_run=1`,
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${run},mount_tag=vdxrun,security_model=passthrough,multidevs=remap`,
    '-virtfs', `local,path=${REPO},mount_tag=vdxsrc,security_model=passthrough,readonly=on,multidevs=remap`,
    ...qemuArgs,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  let errText = '';
  qemu.stdout.on('data', (d) => {
    text += d;
    progress([...text.matchAll(/BENCH (\S+) /g)].length, expected, label);
  });
  qemu.stderr.on('data', (d) => (errText += d));
  const timer = setTimeout(() => qemu.kill('SIGKILL'), 30 * 60 * 1000);
  await new Promise((r) => qemu.once('exit', r));
  clearTimeout(timer);
  rmSync(run, { recursive: true, force: true });
  if (!text.includes(`@@VDX-END ${nonce} rc=0@@`)) throw new Error(`${label} failed:\n${text.slice(-3000)}\n${errText.slice(-1000)}`);
  const runs = {};
  for (const m of text.matchAll(/BENCH (\S+) ([\d.]+)(?: ([\d.]+))?/g)) (runs[m[1]] ??= []).push({ iops: Number(m[2]), lat_us: m[3] === undefined ? undefined : Number(m[3]) });
  // What a run's I/Os cost (guest-vduse.sh): the daemon's CPU, the driver's kicks, the daemon's interrupts.
  const costs = {};
  for (const m of text.matchAll(/COST (\S+) (\d+) (\d+) (\d+) (\d+)/g)) {
    const ios = Number(m[2]);
    if (ios === 0) continue;
    (costs[m[1]] ??= []).push({ ios, cpu_ns_per_io: Number(m[3]) / ios, kicks_per_io: Number(m[4]) / ios, irqs_per_io: Number(m[5]) / ios });
  }
  return { runs, costs };
}

/** vdx vs QSD's vduse-blk export inside the guest (fio on /dev/vdX, alternating). TCG: only the ratio means anything. */
async function guestVduse() {
  const { runs, costs } = await benchGuest('guest-vduse.sh', 'VDUSE in the guest (fio)', ROUNDS * 2);
  const iops = (k) => (runs[k] ?? []).map((r) => r.iops);
  const cost = (k) => Object.fromEntries(['cpu_ns_per_io', 'kicks_per_io', 'irqs_per_io'].map((f) => [f, median((costs[k] ?? []).map((c) => c[f]))]));
  // Rounds run the two back to back: the ratio is the median of per-round ratios, as in the matrix.
  const a = iops('vdx-vduse');
  const b = iops('qsd-vduse');
  const ratio = median(a.map((v, i) => v / b[i]).filter(Number.isFinite));
  return {
    vdx: median(a), qsd: median(b), ratio,
    cost: { vdx: cost('vdx-vduse'), qsd: cost('qsd-vduse') },
    runs: { 'vdx-vduse': a, 'qsd-vduse': b }, costs,
  };
}

/**
 * Packed vs split virtqueues: one vdx (1 reactor, null bdevs) serves two
 * vhost-user-blk-pci disks of one QEMU guest, packed=off and packed=on; fio in
 * the guest alternates between them.
 */
async function guestPacked() {
  const dir = join(tmpdir(), `vdx-bench-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const sock = (n) => join(dir, `${n}.sock`);
  for (const n of ['split', 'packed']) rmSync(sock(n), { force: true });
  return daemon(process.execPath, [join(REPO, 'dist/cli/main.js'), 'serve',
    '--bdev', 'null:size=1G,name=s', '--bdev', 'null:size=2G,name=p',
    '--export', `vhost-user:bdev=s,socket=${sock('split')}`, '--export', `vhost-user:bdev=p,socket=${sock('packed')}`,
    '--rpc-socket', 'none', '--log-level', 'warn', '--log-format', 'json', ...VDX_ARGS]).use('', async (vdx) => {
    await waitFor(sock('split'), vdx);
    await waitFor(sock('packed'), vdx);
    const { runs } = await benchGuest('guest-packed.sh', 'packed vs split in the guest (fio)', ROUNDS * 4, [
      '-object', 'memory-backend-memfd,id=mem,size=2048M,share=on', '-machine', 'memory-backend=mem',
      '-chardev', `socket,id=cs,path=${sock('split')}`, '-device', 'vhost-user-blk-pci,chardev=cs,num-queues=1,packed=off',
      '-chardev', `socket,id=cp,path=${sock('packed')}`, '-device', 'vhost-user-blk-pci,chardev=cp,num-queues=1,packed=on',
    ]);
    const out = {};
    for (const qd of [1, 32]) {
      const m = (k, f) => median((runs[`${k}-qd${qd}`] ?? []).map((r) => r[f]));
      out[`qd${qd}`] = { split: { iops: m('split', 'iops'), lat_us: m('split', 'lat_us') }, packed: { iops: m('packed', 'iops'), lat_us: m('packed', 'lat_us') } };
    }
    return { ...out, runs };
  });
}

// ---------------------------------------------------------------- memory under load

/** VmRSS and its parts (kB lines of /proc/PID/status), MiB. */
function rss(pid) {
  const st = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(st)?.[1] ?? 0) / 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile'), shmem: kb('RssShmem'), hwm: kb('VmHWM') };
}

/**
 * Resident memory with 2 reactors (QSD: 2 iothreads) and 4 exports (2 null, 2
 * file), idle and then with a 2-queue QD32 client on every export at once.
 */
async function memoryUnderLoad(bin) {
  const dir = join(tmpdir(), `vdx-bench-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const out = {};
  for (const peer of ['vdx', 'qsd']) {
    const socks = [0, 1, 2, 3].map((i) => join(dir, `${peer}-mem${i}.sock`));
    for (const sck of socks) rmSync(sck, { force: true });
    const kind = (i) => (i < 2 ? 'null' : 'file');
    const argv =
      peer === 'vdx'
        ? [join(REPO, 'dist/cli/main.js'), 'serve', '--reactors', '2', '--rpc-socket', 'none', '--log-level', 'warn', '--log-format', 'json', ...VDX_ARGS,
            ...socks.flatMap((sck, i) => ['--bdev', `${kind(i) === 'null' ? 'null:size=1G' : `file:path=${FILE_IMG},direct=on`},name=d${i}`, '--export', `vhost-user:bdev=d${i},socket=${sck},num-queues=2`])]
        : ['--object', 'iothread,id=io0', '--object', 'iothread,id=io1',
            ...socks.flatMap((sck, i) => ['--blockdev', kind(i) === 'null' ? `null-co,node-name=d${i},size=${SIZE}` : `file,node-name=d${i},filename=${FILE_IMG},aio=io_uring,cache.direct=on`,
              '--export', `vhost-user-blk,id=e${i},node-name=d${i},addr.type=unix,addr.path=${sck},writable=on,num-queues=2,iothread=io${i % 2}`])];
    out[peer] = await daemon(peer === 'vdx' ? process.execPath : 'qemu-storage-daemon', argv).use(`${peer} memory run: `, async (child) => {
      for (const sck of socks) await waitFor(sck, child);
      await new Promise((r) => setTimeout(r, 1000));
      const idle = rss(child.pid);
      progress(0, 1, `${peer}: 4 clients on 4 exports`);
      let peak = idle.rss;
      const sampler = setInterval(() => (peak = Math.max(peak, rss(child.pid).rss)), 100);
      const clients = socks.map((sck) => new Promise((res, rej) => {
        const c = spawn(join(REPO, 'scripts/vm/in-userland.sh'), [bin, 'virtio-blk-vhost-user', sck, 'read', '32', '2', String(SECONDS * 2), String(SIZE)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let o = '';
        c.stdout.on('data', (d) => (o += d));
        c.stderr.on('data', (d) => (o += d));
        c.once('exit', (code) => (code === 0 ? res(JSON.parse(o.trim().split('\n').pop())) : rej(new Error(`client on ${sck} exited ${code}: ${o.slice(-500)}`))));
      }));
      const results = await Promise.all(clients);
      clearInterval(sampler);
      const after = rss(child.pid);
      return { idle, loaded: { ...after, peak: Math.max(peak, after.hwm) }, iops: results.map((r) => Math.round(r.iops)) };
    });
  }
  return out;
}

// ---------------------------------------------------------------- main

const bin = client();
images();
if (SPDK) {
  spdkLeftovers();
  reserveHugepages();
  process.on('exit', () => {
    try {
      releaseHugepages();
    } catch {
      // the hugepages stay reserved; nothing else to do at exit
    }
  });
}
const configs = [];
if (!args.includes('--no-matrix')) {
  for (const backend of BACKENDS) {
    // The remote rows are the issue's: QD1 and QD32 on one queue (unless narrowed further).
    const qds = REMOTE.has(backend) ? QDS.filter((q) => q <= 32) : QDS;
    const queues = REMOTE.has(backend) ? QUEUES.filter((q) => q === 1) : QUEUES;
    // A remote store's latency is where an interrupt-driven guest and a polling one differ most.
    const clients = CLIENTS ?? (REMOTE.has(backend) && !quick ? KNOWN_CLIENTS : ['poll']);
    for (const client of clients) for (const rw of RWS) for (const qd of qds) for (const q of queues) configs.push({ backend, rw, qd, queues: q, client });
  }
}
process.on('exit', () => {
  // Last resort for a failed run; the normal path stops them below.
  remote.nbd?.child.kill('SIGTERM');
  if (remote.rbd) spawn('bash', [join(REPO, 'scripts/ceph/cluster.sh'), 'stop', remote.rbd.dir], { stdio: 'ignore', detached: true });
});
for (const b of new Set(configs.map((c) => c.backend))) if (REMOTE.has(b)) await startRemote(b);
const total = configs.reduce((n, c) => n + ROUNDS * (2 + (LAYERS.has(c.backend) ? 1 : 0) + (SPDK && SPDK_BACKENDS.has(c.backend) ? 1 : 0)), 0);
let done = 0;
const results = [];
for (const cfg of configs) {
  const peers = ['vdx', OTHER, ...(SPDK && SPDK_BACKENDS.has(cfg.backend) ? ['spdk'] : []), ...(LAYERS.has(cfg.backend) ? ['bare'] : [])];
  const runs = Object.fromEntries(peers.map((p) => [p, []]));
  for (let round = 0; round < ROUNDS; round++) {
    // Rotate who goes first: this machine's noise drifts over seconds.
    const k = (round + configs.indexOf(cfg)) % peers.length;
    const order = [...peers.slice(k), ...peers.slice(0, k)];
    for (const peer of order) {
      progress(done, total, `${peer} ${cfg.backend} rand${cfg.rw} qd${cfg.qd} q${cfg.queues} ${cfg.client}`);
      runs[peer].push(await runOne(bin, peer, cfg));
      done++;
    }
  }
  const med = (peer) => Object.fromEntries(['iops', 'p50_us', 'p99_us', 'client_cpu', 'daemon_cpu', 'daemon_rss_mib', 'kicks_per_io', 'irqs_per_io', 'kick_reads_per_io', 'daemon_ns_per_io'].map((k) => [k, median(runs[peer].map((r) => r[k]))]));
  // The machine drifts between fast and slow phases within minutes: the ratio of each round's back-to-back runs, medians of those.
  const perRound = (peer) => median(runs.vdx.map((r, i) => r.iops / runs[peer][i].iops));
  results.push({
    ...cfg,
    label: `${cfg.backend} rand${cfg.rw} qd${cfg.qd} q${cfg.queues}${cfg.client === 'poll' ? '' : ` ${cfg.client}`}`,
    ...Object.fromEntries(peers.map((p) => [p, med(p)])),
    ratio: Object.fromEntries(peers.filter((p) => p !== 'vdx').map((p) => [p, perRound(p)])),
    runs,
  });
}
progress(total, total, 'done');
/**
 * A daemon's CPU, in cores, while a client is connected and idle (null bdev):
 * from the client's "ready" (queues started) to its "slept", so connecting and
 * tearing down are not counted.
 */
function idleCpu(peer) {
  return withPeer(peer, 'null', 1, 'idle', async (daemon, socket) => {
    const client = spawn('taskset', ['-c', '0', join(REPO, 'scripts/vm/in-userland.sh'), bin, 'virtio-blk-vhost-user', socket, 'idle', '1', '1', String(SECONDS), String(SIZE), 'wait'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let t0 = -1;
    let s0 = 0;
    let cpu = NaN;
    let text = '';
    client.stderr.on('data', (d) => {
      text += d;
      if (t0 < 0 && text.includes('ready\n')) {
        t0 = ticks(daemon.pid);
        s0 = performance.now();
      }
      if (Number.isNaN(cpu) && t0 >= 0 && text.includes('slept\n')) cpu = (ticks(daemon.pid) - t0) / 100 / ((performance.now() - s0) / 1000);
    });
    const code = await new Promise((r) => client.once('exit', r));
    if (code !== 0 || Number.isNaN(cpu)) throw new Error(`idle client failed (${code}): ${text.slice(-500)}`);
    return cpu;
  });
}

/** Each daemon's CPU with a client connected and idle, median over the rounds. */
const idle = {};
if (SPDK && configs.length > 0) {
  for (let round = 0; round < ROUNDS; round++) {
    for (const peer of round % 2 ? ['spdk', OTHER, 'vdx'] : ['vdx', OTHER, 'spdk']) (idle[peer] ??= []).push(await idleCpu(peer));
  }
}
const ceiling = {};
if (remote.rbd) {
  for (const rw of RWS) for (const qd of QDS.filter((q) => q <= 32)) ceiling[`rand${rw} qd${qd}`] = median(Array.from({ length: ROUNDS }, () => rbdBench(rw, qd)));
}
await stopRemote();
delete remote.rbd;
delete remote.nbd;

mkdirSync(OUT, { recursive: true });
const fmt = (n, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
const O = NAMES[OTHER];
const lines = configs.length === 0 ? [`# vdx guest benchmarks (${new Date().toISOString().slice(0, 16)}Z)`, ''] : [
  `# vdx vs ${AB ? NAMES.base : 'qemu-storage-daemon'} (${new Date().toISOString().slice(0, 16)}Z)`,
  '',
  `libblkio client (virtio-blk-vhost-user; client "poll" spins on the rings, "wait" sleeps until the daemon's interrupt), 4 KiB random I/O, ${SECONDS} s per run, medians of ${ROUNDS} rounds, order alternated. vdx: 1 reactor${VDX_ARGS.length ? ` (${VDX_ARGS.join(' ')})` : ''}; ${AB ? `${O}: the same` : 'QSD 7.2: 1 iothread'}. CPU in cores; RSS is the daemon's peak resident memory: vdx's malloc disk (1 GiB, populated) counts in it, QSD's tmpfs file is page cache and does not.`,
  '',
  `| backend | client | rw | QD | queues | vdx IOPS | ${O} IOPS | vdx/${O} | vdx p50/p99 µs | ${O} p50/p99 µs | p50 ratio | vdx CPU | ${O} CPU | client CPU | vdx RSS MiB | ${O} RSS MiB |`,
  '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...results.map((r) => {
    const o = r[OTHER];
    return `| ${r.backend} | ${r.client} | rand${r.rw} | ${r.qd} | ${r.queues} | ${fmt(r.vdx.iops)} | ${fmt(o.iops)} | ${fmt(r.vdx.iops / o.iops, 2)} | ${fmt(r.vdx.p50_us, 1)} / ${fmt(r.vdx.p99_us, 1)} | ${fmt(o.p50_us, 1)} / ${fmt(o.p99_us, 1)} | ${fmt(r.vdx.p50_us / o.p50_us, 2)} | ${fmt(r.vdx.daemon_cpu, 2)} | ${fmt(o.daemon_cpu, 2)} | ${fmt(r.vdx.client_cpu, 2)} | ${fmt(r.vdx.daemon_rss_mib)} | ${fmt(o.daemon_rss_mib)} |`;
  }),
  '',
];
writeFileSync(join(OUT, 'results.md'), lines.join('\n'));
writeFileSync(join(OUT, 'results.json'), `${JSON.stringify({ seconds: SECONDS, rounds: ROUNDS, results }, null, 2)}\n`);
if (results.length > 0) writeFileSync(join(OUT, 'chart.svg'), chart(results));
/** Add a section to results.md (rewritten at once, so a later failure keeps it) and its data as JSON. */
function addSection(md, jsonName, data) {
  lines.push('', ...md, '');
  writeFileSync(join(OUT, 'results.md'), lines.join('\n'));
  writeFileSync(join(OUT, jsonName), `${JSON.stringify(data, null, 2)}\n`);
}
{
  // The layers against their base: passthru's cost, crypt's cost and its CPU per GiB moved.
  const layered = results.filter((r) => r.bare);
  if (layered.length > 0) {
    const perGiB = (x) => x.daemon_cpu / ((x.iops * 4096) / 2 ** 30);
    addSection(
      [
        '## Layers over malloc',
        '',
        'vdx with a layer over its malloc bdev against vdx on the bare malloc bdev, run in the same rounds as the row above (order rotated), same client; CPU per GiB is the daemon\'s core-seconds per GiB moved.',
        '',
        '| layer | client | rw | QD | queues | layer IOPS | malloc IOPS | layer/malloc | layer CPU s/GiB | malloc CPU s/GiB |',
        '|---|---|---|---|---|---|---|---|---|---|',
        ...layered.map((r) => `| ${r.backend} | ${r.client} | rand${r.rw} | ${r.qd} | ${r.queues} | ${fmt(r.vdx.iops)} | ${fmt(r.bare.iops)} | ${fmt(r.vdx.iops / r.bare.iops, 2)} | ${fmt(perGiB(r.vdx), 2)} | ${fmt(perGiB(r.bare), 2)} |`),
      ],
      'layers.json',
      layered.map((r) => ({ layer: r.backend, rw: r.rw, qd: r.qd, queues: r.queues, client: r.client, iops: r.vdx.iops, malloc_iops: r.bare.iops, cpu_s_per_gib: perGiB(r.vdx), malloc_cpu_s_per_gib: perGiB(r.bare) })),
    );
  }
}
if (SPDK) {
  const three = results.filter((r) => r.spdk);
  const trio = (r, f) => ['vdx', OTHER, 'spdk'].map((p) => f(r[p])).join(' / ');
  addSection(
    [
      '## vdx, QSD and SPDK',
      '',
      `The same libblkio client pinned to CPU 0; each daemon has one reactor/iothread on CPU 1 (vdx --cpumask 0x2, QSD under taskset -c 1, SPDK vhost -m 0x2), ${SECONDS} s per run, ${ROUNDS} rounds, the order rotated each round. The ratios are medians of the per-round ratios (each round runs the peers back to back); IOPS and p50 are medians of the runs. Per I/O, from /proc/PID/io: kicks are the client's eventfd writes, interrupts the daemon's; CPU is the daemon's, all threads, ns per request.`,
      '',
      `| backend | client | QD | vdx IOPS / p50 µs | ${O} IOPS / p50 µs | SPDK IOPS / p50 µs | vdx/${O} | vdx/SPDK | kicks per I/O (vdx / ${O} / SPDK) | interrupts per I/O | daemon CPU ns per I/O |`,
      '|---|---|---|---|---|---|---|---|---|---|---|',
      ...three.map((r) => `| ${r.backend === 'malloc' ? 'RAM disk' : r.backend} | ${r.client} | ${r.qd} | ${fmt(r.vdx.iops)} / ${fmt(r.vdx.p50_us, 1)} | ${fmt(r[OTHER].iops)} / ${fmt(r[OTHER].p50_us, 1)} | ${fmt(r.spdk.iops)} / ${fmt(r.spdk.p50_us, 1)} | ${fmt(r.ratio[OTHER], 2)} | ${fmt(r.ratio.spdk, 2)} | ${trio(r, (x) => fmt(x.kicks_per_io, 3))} | ${trio(r, (x) => fmt(x.irqs_per_io, 3))} | ${trio(r, (x) => fmt(x.daemon_ns_per_io))} |`),
      ...(Object.keys(idle).length > 0 ? [
        '',
        `Idle, a client connected (queues started) and no I/O for ${SECONDS} s (null bdev), daemon CPU in % of a core, median of ${ROUNDS}, from the client's start of the queues to the end of its sleep: ${['vdx', OTHER, 'spdk'].map((p) => `${NAMES[p]} ${fmt(100 * median(idle[p]), 1)} %`).join(', ')}.`,
      ] : []),
    ],
    'spdk.json',
    { rows: three.map(({ runs, ...r }) => r), idle },
  );
}
if (Object.keys(ceiling).length > 0) {
  const row = (key, client) => results.find((r) => r.backend === 'rbd' && r.client === client && `rand${r.rw} qd${r.qd}` === key);
  const clients = [...new Set(results.filter((r) => r.backend === 'rbd').map((r) => r.client))];
  addSection(
    [
      '## rbd: vdx against the store\'s own ceiling',
      '',
      `\`rbd bench\` (librbd, 4 KiB random, --io-threads = QD) on the same image of the one-node cluster (memstore OSD on this machine), medians of ${ROUNDS}; vdx and QSD from the table above (libblkio client through vhost-user), per client mode.`,
      '',
      `| I/O | rbd bench IOPS | ${clients.map((c) => `vdx IOPS (${c}) | vdx / rbd bench (${c}) | QSD IOPS (${c})`).join(' | ')} | vdx RSS MiB (one rbd bdev) |`,
      `|---|---|${clients.map(() => '---|---|---|').join('')}---|`,
      ...Object.entries(ceiling).map(([k, v]) => {
        const cells = clients.map((c) => {
          const r = row(k, c);
          return r ? `${fmt(r.vdx.iops)} | ${fmt(r.vdx.iops / v, 2)} | ${r[OTHER] ? fmt(r[OTHER].iops) : '-'}` : '- | - | -';
        });
        const any = clients.map((c) => row(k, c)).find(Boolean);
        return `| ${k} | ${fmt(v)} | ${cells.join(' | ')} | ${any ? fmt(any.vdx.daemon_rss_mib) : '-'} |`;
      }),
    ],
    'rbd-ceiling.json',
    ceiling,
  );
}
if (args.includes('--guest')) {
  const g = await guestVduse();
  addSection(
    [
      '## VDUSE in the 6.12 bench guest (TCG)',
      '',
      `fio 4 KiB randread QD32 (libaio, O_DIRECT) on /dev/vdX (virtio_vdpa), ${ROUNDS} rounds in alternating order: vdx ${fmt(g.vdx)} IOPS, qemu-storage-daemon vduse-blk ${fmt(g.qsd)} IOPS (medians); vdx / QSD ${fmt(g.ratio, 2)}, the median of per-round ratios. Under TCG only ratios mean anything.`,
      '',
      "Per I/O (medians): the daemon's CPU (/proc/PID/stat), and, counted in the guest kernel by kprobes, the kicks the driver makes (vduse_vdpa_kick_vq) and the interrupts the daemon injects (VDUSE_VQ_INJECT_IRQ).",
      '',
      '| daemon | CPU ns per I/O | kicks per I/O | interrupts per I/O |',
      '|---|---|---|---|',
      ...[['vdx', g.cost.vdx], ['QSD vduse-blk', g.cost.qsd]].map(([name, c]) => `| ${name} | ${fmt(c.cpu_ns_per_io)} | ${fmt(c.kicks_per_io, 3)} | ${fmt(c.irqs_per_io, 3)} |`),
    ],
    'guest-vduse.json',
    g,
  );
}
if (args.includes('--memory')) {
  const m = await memoryUnderLoad(bin);
  const row = (peer) => {
    const x = m[peer];
    return `| ${peer === 'vdx' ? 'vdx (2 reactors)' : 'QSD (2 iothreads)'} | ${fmt(x.idle.rss)} | ${fmt(x.loaded.peak)} | ${fmt(x.loaded.anon)} / ${fmt(x.loaded.file)} / ${fmt(x.loaded.shmem)} | ${x.iops.map((n) => fmt(n / 1000)).join(', ')} |`;
  };
  addSection(
    [
      '## Resident memory, 4 exports under load',
      '',
      `4 vhost-user exports (2 null, 2 file on io_uring), each with a 2-queue QD32 randread libblkio client, all four at once for ${SECONDS * 2} s.`,
      '',
      '| daemon | idle RSS MiB | peak RSS under load MiB | anon / file / shmem MiB after | client kIOPS |',
      '|---|---|---|---|---|',
      row('vdx'),
      row('qsd'),
    ],
    'memory.json',
    m,
  );
}
if (args.includes('--packed')) {
  const g = await guestPacked();
  addSection(
    [
      '## Packed vs split virtqueues (QEMU 7.2 guest, TCG)',
      '',
      `One vdx (1 reactor, null bdevs) serves two vhost-user-blk-pci disks of one guest, packed=off and packed=on; fio 4 KiB randread (libaio, O_DIRECT) alternates between them, medians of ${ROUNDS}. Under TCG the guest is the bottleneck; only the ratio means anything.`,
      '',
      '| QD | split IOPS | packed IOPS | packed/split | split lat µs | packed lat µs |',
      '|---|---|---|---|---|---|',
      ...[1, 32].map((qd) => {
        const r = g[`qd${qd}`];
        return `| ${qd} | ${fmt(r.split.iops)} | ${fmt(r.packed.iops)} | ${fmt(r.packed.iops / r.split.iops, 2)} | ${fmt(r.split.lat_us, 1)} | ${fmt(r.packed.lat_us, 1)} |`;
      }),
    ],
    'guest-packed.json',
    g,
  );
}
process.stdout.write(`${lines.join('\n')}\nwritten to ${OUT}\n`);
