// vdx with and without interrupt coalescing, waiting libblkio client, pinned: client CPU 0, reactor CPU 1.
// [BACKENDS=null,malloc,file] node ab.mjs ROUNDS SECONDS QD  -> per-setting medians of IOPS, interrupts/IO, client µs/IO, daemon µs/IO
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const [ROUNDS, SECONDS, QD] = process.argv.slice(2).map(Number);
const REPO = process.env.VDX_REPO ?? new URL('../..', import.meta.url).pathname;
// /tmp: the userland the client runs in shares it (scripts/vm/in-userland.sh)
const TMP = mkdtempSync(join(tmpdir(), 'vdx-coal-'));
const BIN = join(TMP, 'blkio-bench');
execFileSync('gcc', ['-O2', '-o', BIN, `${REPO}/scripts/bench/blkio-bench.c`, '-ldl']);
const SETTINGS = process.env.SETTINGS
  ? JSON.parse(process.env.SETTINGS) // {"off": "", "mid": ",delay-base-us=10,iops-threshold=100000"}
  : {
      off: '',
      mild: ',delay-base-us=10,iops-threshold=1000000',
      spdk60k: ',delay-base-us=1,iops-threshold=60000',
      mid: ',delay-base-us=10,iops-threshold=100000',
      strong: ',delay-base-us=50,iops-threshold=1000',
    };
const ALL_BACKENDS = {
  null: 'null:size=1G,name=d0',
  malloc: 'malloc:size=1G,populate=on,name=d0',
  // O_DIRECT io_uring on the bench's file (npm run bench makes it: fallocate -l 1G)
  file: 'file:path=/var/tmp/vdx-bench.img,direct=on,name=d0',
};
const BACKENDS = Object.fromEntries((process.env.BACKENDS ?? 'null,malloc').split(',').map((b) => [b, ALL_BACKENDS[b]]));
const tick = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
const syscw = (pid) => Number(/syscw: (\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))[1]);
const res = {};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
for (let round = 0; round < ROUNDS; round++) {
  for (const [b, bdev] of Object.entries(BACKENDS)) {
    let names = Object.keys(SETTINGS);
    if (round % 2) names = names.reverse();
    for (const s of names) {
      const sock = join(TMP, `${s}.sock`);
      const p = spawn(process.execPath, [`${REPO}/dist/cli/main.js`, 'serve', '--bdev', bdev, '--export', `vhost-user:bdev=d0,socket=${sock}${SETTINGS[s]}`, '--rpc-socket', 'none', '--log-level', 'warn', '--cpumask', '0x2'], { stdio: 'ignore' });
      for (let i = 0; i < 100 && !existsSync(sock); i++) await sleep(100);
      await sleep(300);
      const w0 = syscw(p.pid), c0 = tick(p.pid);
      const out = JSON.parse(execFileSync('taskset', ['-c', '0', `${REPO}/scripts/vm/in-userland.sh`, BIN, 'virtio-blk-vhost-user', sock, 'read', String(QD), '1', String(SECONDS), String(1 << 30), 'wait']).toString());
      const w1 = syscw(p.pid), c1 = tick(p.pid);
      p.kill('SIGTERM');
      await new Promise((r) => p.on('close', r));
      const k = `${b} ${s}`;
      (res[k] ??= []).push({ iops: out.iops, irq: (w1 - w0) / out.ios, cli: (out.client_cpu * out.seconds * 1e6) / out.ios, dmn: ((c1 - c0) * 1e6) / out.ios, p50: out.p50_us });
    }
  }
  process.stderr.write(`round ${round + 1} done\n`);
}
const med = (a) => { const s = [...a].sort((x, y) => x - y); return s[s.length >> 1]; };
console.log(`QD${QD}, ${ROUNDS} rounds x ${SECONDS} s, medians; ratio = median of per-round IOPS ratios against off`);
console.log('| backend | setting | IOPS | vs off | p50 µs | interrupts per I/O | client CPU µs per I/O | daemon CPU µs per I/O |');
console.log('|---|---|---|---|---|---|---|---|');
for (const b of Object.keys(BACKENDS)) for (const s of Object.keys(SETTINGS)) {
  const r = res[`${b} ${s}`], o = res[`${b} off`];
  const ratio = med(r.map((x, i) => x.iops / o[i].iops));
  console.log(`| ${b} | ${s} ${SETTINGS[s].slice(1)} | ${Math.round(med(r.map((x) => x.iops))).toLocaleString('en')} | ${ratio.toFixed(2)} | ${med(r.map((x) => x.p50)).toFixed(1)} | ${med(r.map((x) => x.irq)).toFixed(3)} | ${med(r.map((x) => x.cli)).toFixed(2)} | ${med(r.map((x) => x.dmn)).toFixed(2)} |`);
}
