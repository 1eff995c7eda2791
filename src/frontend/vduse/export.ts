// A VDUSE export: the device plus its place on the vDPA bus. Bus operations run
// on the vdpa ops worker so this thread can answer the kernel meanwhile.
import type { Logger } from 'pino';
import type { QueueCounterSource, QueuePlacer, ReactorPool } from '../../core/reactor-pool.js';
import type { BdevDesc } from '../../bdev/types.js';
import type { NativeShim } from '../../native/index.js';
import { type BlkExportOptions, blkParams } from '../../virtio/blk-config.js';
import { type CoalescingSettings, newCoalescingBuffer, writeCoalescing } from '../../virtio/coalescing.js';
import type { VdpaBus } from '../../vdpa/bus.js';
import type { VdpaOps, VdpaState } from '../../vdpa/ops.js';
import { VduseDevice } from './device.js';

export interface VduseExportOptions extends BlkExportOptions, CoalescingSettings {
  name: string;
  bus: VdpaBus | 'none';
  packed: boolean;
  /** seconds the kernel waits for a control message's answer (undefined: the kernel's) */
  msgTimeout?: number | undefined;
}

export interface VduseExportInfo extends VdpaState {
  type: 'vduse';
  bdev: string;
  /** the kernel's control-message timeout for the device, seconds */
  msgTimeout: number | undefined;
}

export class VduseExport {
  readonly device: VduseDevice;
  private readonly log: Logger;
  private switching: Promise<unknown> = Promise.resolve();
  private readonly coalescing: SharedArrayBuffer;

  constructor(
    native: NativeShim,
    pool: ReactorPool,
    /** where this export's queues may run */
    placer: QueuePlacer,
    private readonly bdev: BdevDesc,
    readonly opts: VduseExportOptions,
    log: Logger,
    private readonly ops: VdpaOps,
    /** where the queues count their I/O (metrics, iostat) */
    counters: QueueCounterSource | undefined,
    /** where devices' records and in-flight logs live, for a restarted vdx to re-attach */
    stateDir: string,
  ) {
    this.log = log.child({ component: 'vduse', export: opts.name });
    this.coalescing = newCoalescingBuffer(opts);
    this.device = new VduseDevice({
      native,
      pool: placer,
      log: this.log,
      bdev,
      blk: blkParams(bdev.info, opts),
      opts: { ...opts, vduseName: opts.name },
      onBroken: (id, h) => pool.onBroken(id, h),
      counters,
      stateDir,
      coalescing: this.coalescing,
    });
  }

  /** Interrupt coalescing for this device's queues, running ones included (they read it within a pass). */
  setCoalescing(s: CoalescingSettings): void {
    writeCoalescing(this.coalescing, s);
  }

  get name(): string {
    return this.opts.name;
  }

  async start(): Promise<void> {
    if (this.bdev.info.volatile && this.device.leftOver()) {
      // Its data died with the vdx that served it: the old device, served
      // again, would show its driver a disk of zeros under its caches. It goes
      // (its driver sees the disk removed) and a new one is made. Taken back
      // first, so the reset its removal sends is answered at once, not after
      // the kernel's message timeout.
      await this.device.create({ serve: false });
      const st = await this.ops.state(this.name).catch(() => undefined);
      if (st?.onBus) await this.ops.devDel(this.name);
      await this.device.destroy();
      this.log.warn(`VDUSE device ${this.name} was left by a previous vdx, but its ${this.bdev.info.type} bdev's data died with it: removed it, creating it anew`);
    }
    await this.device.create();
    if (this.opts.bus === 'none') return;
    try {
      if (this.device.reattached) {
        // Re-attached: the device stays on the bus and driver where it was
        // (a run-time switch may have moved it), so /dev/vdX keeps its
        // major:minor and /dev/vhost-vdpa-N its VM.
        const st = await this.ops.state(this.name);
        if (st.onBus && st.driver) {
          this.log.info({ driver: st.driver, node: st.node }, `${this.name} stays ${st.node ?? 'on the bus'}`);
          return;
        }
        if (!st.onBus) await this.ops.devNew(this.name);
      } else {
        await this.ops.devNew(this.name);
      }
      const node = await this.ops.bind(this.name, this.opts.bus);
      this.log.info({ bus: this.opts.bus, node }, `${this.name} is ${node}`);
    } catch (e) {
      // A device taken over from a previous vdx stays for the next attempt; one made now goes.
      await (this.device.reattached ? this.detach() : this.stop()).catch(() => {});
      throw new Error(`vduse export ${this.name}: ${(e as Error).message}`);
    }
  }

  /** Move the device to the other bus at run time; its data stays where it is. */
  switchBus(bus: VdpaBus): Promise<string> {
    const next = this.switching.then(async () => {
      const st = await this.ops.state(this.name);
      if (!st.onBus) throw new Error(`${this.name} is not on the vDPA bus (bus=none): add it with 'vdpa dev add name ${this.name} mgmtdev vduse' first`);
      const node = await this.ops.bind(this.name, bus);
      this.log.info({ bus, node }, `${this.name} moved to ${bus}: ${node}`);
      return node;
    });
    this.switching = next.catch(() => {});
    return next;
  }

  get bdevName(): string {
    return this.bdev.info.name;
  }

  async info(): Promise<VduseExportInfo> {
    return { type: 'vduse', bdev: this.bdev.info.name, ...(await this.ops.state(this.name)), msgTimeout: this.device.msgTimeout() };
  }

  /** Stop serving and leave the device on the bus as it is, for the next vdx to re-attach (an upgrade). */
  async detach(): Promise<void> {
    // A malloc bdev's data ends with this process: its device cannot outlive it.
    if (this.bdev.info.volatile) return this.stop();
    await this.switching;
    if (await this.device.detach()) this.log.info(`VDUSE device ${this.name} left in place for the next vdx`);
  }

  /** True when the device was taken over from a previous vdx rather than created. */
  get reattached(): boolean {
    return this.device.reattached;
  }

  async stop(): Promise<void> {
    await this.switching;
    // A device we failed to create is someone else's: leave the bus alone.
    if (!this.device.created) return;
    // Whoever put it on the bus (we, or iproute2 with bus=none), it must leave before it can be destroyed.
    // A failure leaves the device as it was (still serving): the caller may retry.
    const st = await this.ops.state(this.name).catch(() => undefined);
    if (st?.onBus) {
      await this.ops.devDel(this.name).catch((e: Error) => {
        throw new Error(`vdpa dev del ${this.name}: ${e.message}`);
      });
    }
    if (await this.device.destroy()) this.log.info(`VDUSE device ${this.name} destroyed`);
  }
}
