// A vhost-user-blk export: a unix socket QEMU (or libblkio) connects to. One
// front-end at a time; when it goes, the next may connect (reconnect).
import { chmodSync, unlinkSync } from 'node:fs';
import { claimSocketPath } from '../../net/socket-path.js';
import type { Logger } from 'pino';
import type { QueueCounterSource, QueuePlacer, ReactorPool } from '../../core/reactor-pool.js';
import type { BdevDesc } from '../../bdev/types.js';
import type { FdWatcher, NativeShim } from '../../native/index.js';
import { E } from '../../virtio/errno.js';
import { type BlkExportOptions, blkConfig, blkFeatures, blkParams } from '../../virtio/blk-config.js';
import { type CoalescingSettings, newCoalescingBuffer, writeCoalescing } from '../../virtio/coalescing.js';
import { VIRTIO_F_RING_PACKED_BIT, bit } from '../../virtio/constants.js';
import { type SessionContext, VhostUserSession } from './session.js';

export interface VhostUserExportOptions extends BlkExportOptions, CoalescingSettings {
  name: string;
  socket: string;
  /** socket file mode, default 0o600 */
  mode: number;
  /** offer VIRTIO_F_RING_PACKED (QEMU uses it with packed=on) */
  packed: boolean;
}

export class VhostUserExport {
  private listenFd = -1;
  private watcher: FdWatcher | undefined;
  private session: VhostUserSession | undefined;
  private sessions = 0;
  private readonly ctx: SessionContext;
  private readonly coalescing: SharedArrayBuffer;

  constructor(
    private readonly native: NativeShim,
    private readonly pool: ReactorPool,
    /** where this export's queues may run */
    placer: QueuePlacer,
    bdev: BdevDesc,
    readonly opts: VhostUserExportOptions,
    log: Logger,
    /** where the queues count their I/O (metrics, iostat) */
    counters?: QueueCounterSource,
  ) {
    const blk = blkParams(bdev.info, opts);
    this.coalescing = newCoalescingBuffer(opts);
    this.ctx = {
      name: opts.name,
      native,
      pool: placer,
      log: log.child({ component: 'vhost-user', export: opts.name }),
      bdev,
      blk,
      numQueues: opts.numQueues,
      // Packed rings are offered by default: QEMU uses them only with packed=on.
      features: blkFeatures(blk, opts.numQueues) | (opts.packed ? bit(VIRTIO_F_RING_PACKED_BIT) : 0n),
      config: blkConfig(blk, opts),
      counters,
      coalescing: this.coalescing,
    };
  }

  /** Interrupt coalescing for this export's queues, running ones included (they read it within a pass). */
  setCoalescing(s: CoalescingSettings): void {
    writeCoalescing(this.coalescing, s);
  }

  /**
   * The bdev's capacity changed: the config space, the queues started from now
   * on, and the connected front-end, told through its back-end request channel
   * (it re-reads the config and interrupts the guest) when it gave one.
   */
  resized(bdev: BdevDesc): void {
    this.ctx.blk = blkParams(bdev.info, this.opts);
    this.ctx.config = blkConfig(this.ctx.blk, this.opts);
    this.session?.configChanged();
  }

  /** A front-end (QEMU, libblkio) is connected now. */
  get connected(): boolean {
    return this.session !== undefined;
  }

  /** Front-ends that have connected since the export started. */
  get sessionCount(): number {
    return this.sessions;
  }

  get bdevName(): string {
    return this.ctx.bdev.info.name;
  }

  async start(): Promise<void> {
    const path = this.opts.socket;
    await claimSocketPath(path, 'socket=');
    this.listenFd = this.native.unixListen(path, 4);
    try {
      chmodSync(path, this.opts.mode);
      this.watcher = new this.native.FdWatcher(this.listenFd);
      this.watcher.start(true, false, () => this.accept());
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.ctx.log.info({ socket: path, bdev: this.ctx.bdev.info.name, queues: this.opts.numQueues }, 'listening');
  }

  private accept(): void {
    for (;;) {
      const fd = this.native.accept(this.listenFd);
      if (fd === -E.EAGAIN) return;
      if (fd < 0) {
        this.ctx.log.warn(`accept failed (${-fd})`);
        return;
      }
      const serial = ++this.sessions;
      const s = new VhostUserSession(fd, this.ctx, serial, (id, h) => this.pool.onBroken(id, h));
      this.session = s;
      this.ctx.log.info({ session: serial }, 'front-end connected');
      // One front-end at a time. The next one waits in the listen backlog (as
      // with qemu-storage-daemon) rather than being closed: a QEMU restarted
      // a moment after the old one died, or a second client during teardown,
      // is served as soon as this session ends.
      this.watcher?.stop();
      void s.done.then(() => {
        if (this.session !== s) return;
        this.session = undefined;
        if (this.watcher && this.listenFd >= 0) this.watcher.start(true, false, () => this.accept());
      });
      return;
    }
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.listenFd >= 0) {
      this.native.close(this.listenFd);
      this.listenFd = -1;
      try {
        unlinkSync(this.opts.socket);
      } catch {
        // already gone
      }
    }
    await this.session?.close();
  }
}
