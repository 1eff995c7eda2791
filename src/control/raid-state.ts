// Which members of each mirror are out of step, kept in the state dir
// (raid1-NAME.json) while vdx runs: a vdx started again, after a crash, an
// upgrade or a stop, must not take a member that missed writes for one in step
// and read stale data from it. The states live in memory the reactors change
// (a member fails on a reactor); the main thread looks every LOOK_MS and
// writes what changed, by rename, so a crash leaves the old file or the new.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { raidRemoveMember, raidStatus } from '../bdev/raid1.js';
import type { BdevEntry } from './bdevs.js';

const LOOK_MS = 200;

interface Saved {
  members: string[];
  /** members that were failed or being rebuilt */
  outOfStep: string[];
}

export class RaidStates {
  /** mirror name -> what its file holds */
  private readonly written = new Map<string, string>();
  /** mirror name -> the states last failed to be written (said once, tried again every look) */
  private readonly failing = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  private path(name: string): string {
    return join(this.dir, `raid1-${encodeURIComponent(name)}.json`);
  }

  /** A mirror just made: the members its file names as out of step are failed again, to be added back. */
  restore(e: BdevEntry): void {
    if (e.spec.type !== 'raid1') return;
    const name = e.desc.info.name;
    let saved: Saved;
    try {
      saved = JSON.parse(readFileSync(this.path(name), 'utf8')) as Saved;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ component: 'bdev', name }, `ignoring ${this.path(name)}: ${(err as Error).message}`);
      return;
    }
    const ok = Array.isArray(saved?.members) && Array.isArray(saved.outOfStep) && saved.outOfStep.every((m) => typeof m === 'string');
    const same = ok && saved.members.length === e.bases.length && e.bases.every((m) => saved.members.includes(m));
    if (!same || !saved.outOfStep.every((m) => e.bases.includes(m))) {
      this.log.warn({ component: 'bdev', name }, `ignoring ${this.path(name)}: it is not the record of a mirror of ${e.bases.join(', ')}`);
      return;
    }
    for (const m of saved.outOfStep) {
      try {
        raidRemoveMember(e.desc, m);
        this.log.warn({ component: 'bdev', name, member: m }, `raid1 ${name}: member ${m} was out of step when vdx last ran; it stays failed until bdev_raid_add_base_bdev rebuilds it`);
      } catch (err) {
        this.log.error({ component: 'bdev', name, member: m }, `raid1 ${name}: cannot fail member ${m} again: ${(err as Error).message}`);
      }
    }
  }

  /** Look at the mirrors every LOOK_MS until stop(). */
  start(list: () => BdevEntry[]): void {
    this.timer = setInterval(() => this.sync(list()), LOOK_MS);
    this.timer.unref();
  }

  /** A last look (before the bdevs go), then no more. */
  stop(list: BdevEntry[]): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.sync(list);
  }

  /** Write the mirrors whose states changed; remove the files of mirrors that were deleted. */
  sync(list: BdevEntry[]): void {
    const live = new Set<string>();
    for (const e of list) {
      if (e.spec.type !== 'raid1') continue;
      const name = e.desc.info.name;
      live.add(name);
      const outOfStep = raidStatus(e.desc).base_bdevs_list.filter((m) => m.state !== 'online').map((m) => m.name);
      const text = JSON.stringify({ members: e.bases, outOfStep } satisfies Saved);
      if (this.written.get(name) === text) continue;
      try {
        this.write(this.path(name), `${text}\n`);
        this.written.set(name, text);
        this.failing.delete(name);
      } catch (err) {
        if (this.failing.get(name) !== text) {
          this.log.error({ component: 'bdev', name }, `cannot record the mirror's member states in ${this.path(name)} (trying again): ${(err as Error).message}`);
          this.failing.set(name, text);
        }
      }
    }
    for (const name of [...this.written.keys()]) {
      if (live.has(name)) continue;
      try {
        rmSync(this.path(name), { force: true });
      } catch (err) {
        this.log.warn({ component: 'bdev', name }, `cannot remove ${this.path(name)} of a deleted mirror: ${(err as Error).message}`);
      }
      this.written.delete(name);
    }
  }

  /** Written, synced, renamed over the old record, and the directory synced: a crash or a power cut leaves one of the two whole. */
  private write(path: string, text: string): void {
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, path);
    const dirFd = openSync(this.dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }
}
