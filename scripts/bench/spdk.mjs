// SPDK's vhost target as a bench peer (`npm run bench -- --peer spdk`). vdx
// does not build or ship SPDK: point the bench at a built tree with --spdk DIR
// or VDX_SPDK (DIR/build/bin/vhost); ../shared/reference/spdk-build.md is how
// the one measured here was built. SPDK allocates its memory from hugepages, so
// the bench reserves them for the run and gives them back at the end.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

const HUGEPAGES = '/proc/sys/vm/nr_hugepages';
const HUGE_MOUNT = '/dev/hugepages';
/** SPDK's memory (-s, MiB): room for the 1 GiB malloc bdev and its pools; 2 MiB pages, with slack for DPDK's own. */
const MEM_MIB = 2048;
const PAGES = MEM_MIB / 2 + 512;

/** The vhost binary under DIR, or a message that says what is missing. */
export function spdkVhost(dir) {
  if (!dir) throw new Error('--peer spdk needs an SPDK build: --spdk DIR or VDX_SPDK=DIR, where DIR/build/bin/vhost exists (see ../shared/reference/spdk-build.md)');
  const bin = join(dir, 'build/bin/vhost');
  if (!existsSync(bin)) throw new Error(`--spdk ${dir}: no build/bin/vhost there (build SPDK with its vhost target first)`);
  return bin;
}

let saved;
/** Reserve the hugepages SPDK's -s needs and mount hugetlbfs where DPDK looks; undone by releaseHugepages. */
export function reserveHugepages() {
  const before = Number(readFileSync(HUGEPAGES, 'utf8'));
  const mounted = readFileSync('/proc/mounts', 'utf8').split('\n').some((l) => l.split(' ')[1] === HUGE_MOUNT && l.split(' ')[2] === 'hugetlbfs');
  saved = { before, mounted };
  if (before < PAGES) writeFileSync(HUGEPAGES, String(PAGES));
  const got = Number(readFileSync(HUGEPAGES, 'utf8'));
  if (got < PAGES) throw new Error(`SPDK needs ${PAGES} hugepages of 2 MiB; the kernel gave ${got} (memory too fragmented or too little free)`);
  if (!mounted) {
    mkdirSync(HUGE_MOUNT, { recursive: true });
    execFileSync('mount', ['-t', 'hugetlbfs', 'nodev', HUGE_MOUNT]);
  }
}

export function releaseHugepages() {
  if (!saved) return;
  if (!saved.mounted) execFileSync('umount', [HUGE_MOUNT]);
  writeFileSync(HUGEPAGES, String(saved.before));
  saved = undefined;
}

/**
 * vhost -m 0x2: one reactor on CPU 1 (its DPDK control threads take the other
 * CPUs, idle during I/O). The controller is named after the socket, in its
 * directory; the bdev comes from a JSON config, so no rpc.py round trips.
 */
export function spdkCommand(bin, backend, socket, size) {
  const blocks = size / 4096;
  const bdev = {
    null: { method: 'bdev_null_create', params: { name: 'd0', num_blocks: blocks, block_size: 4096 } },
    malloc: { method: 'bdev_malloc_create', params: { name: 'd0', num_blocks: blocks, block_size: 4096 } },
  }[backend];
  if (!bdev) throw new Error(`SPDK peer: no ${backend} backend (null and malloc only)`);
  const config = join(dirname(socket), `${basename(socket)}.json`);
  writeFileSync(config, JSON.stringify({
    subsystems: [
      { subsystem: 'bdev', config: [bdev] },
      { subsystem: 'vhost_blk', config: [{ method: 'vhost_create_blk_controller', params: { ctrlr: basename(socket), dev_name: 'd0', cpumask: '0x2' } }] },
    ],
  }));
  return [bin, ['-m', '0x2', '-s', String(MEM_MIB), '--no-pci', '-S', dirname(socket), '-r', `${socket}.rpc`, '--json', config]];
}

/** DPDK leaves a runtime directory per process behind; remove those of processes that are gone. */
export function spdkLeftovers() {
  const dir = '/var/run/dpdk';
  if (!existsSync(dir)) return;
  for (const d of readdirSync(dir)) {
    const m = /^spdk_pid(\d+)$/.exec(d);
    if (m && !existsSync(`/proc/${m[1]}`)) rmSync(join(dir, d), { recursive: true, force: true });
  }
}
