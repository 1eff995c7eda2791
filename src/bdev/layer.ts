// What layered bdevs share: a channel that forwards each I/O to one base,
// shifted by a fixed offset and bounded to a window of the base (passthru: the
// whole base; split: one part), and the description of a bdev built on one.
//
// Each forwarded I/O travels as a child BdevIo from the channel's own pool:
// the parent belongs to its owner (a virtio queue) and must not be rewritten
// under it. The pool grows to the deepest queue it has seen and is then reused,
// so nothing is allocated per I/O. The child's completion runs from the base
// channel's poll() in the reactor's pass, where it completes the parent: so a
// parent never completes inside submit().
import { checkKeys } from './spec.js';
import { type BdevDesc, BdevIo, type Channel, type ChannelContext, IoOp } from './types.js';

const EINVAL = -22;

/**
 * A layer's own child I/Os: made as its queue deepens, then reused, so nothing
 * is allocated per I/O. child.slot numbers them (for per-child state in
 * arrays that grow to `size`).
 */
export class ChildPool {
  private readonly free: BdevIo[] = [];
  /** children made so far */
  size = 0;

  constructor(private readonly done: (child: BdevIo) => void) {}

  take(): BdevIo {
    return this.free.pop() ?? this.make();
  }

  give(child: BdevIo): void {
    child.ctx = undefined;
    this.free.push(child);
  }

  private make(): BdevIo {
    const child = new BdevIo();
    child.done = this.done;
    child.slot = this.size++;
    return child;
  }
}

export class ForwardChannel implements Channel {
  readonly notifyFd: number = -1;
  readonly copiesLater: boolean;
  private readonly children: ChildPool;
  private inFlight = 0;
  private closed = false;
  /** the child the last successful submit sent (a subclass may mark it) */
  protected lastChild: BdevIo | undefined;
  /** what baseDone threw, raised from this channel's own poll(): it runs inside the base's, which must not take the blame */
  private deferredError: unknown = undefined;
  private readonly childDone = (child: BdevIo): void => {
    try {
      this.baseDone(child);
    } catch (e) {
      this.deferredError ??= e;
    }
  };

  constructor(
    private readonly base: Channel,
    private readonly baseDesc: BdevDesc,
    private readonly ctx: ChannelContext,
    /** where this bdev's byte 0 is on the base */
    private readonly shiftBytes: number,
    /** this bdev's size: I/O past it is refused, never sent to the base */
    private readonly sizeBytes: number,
  ) {
    this.copiesLater = base.copiesLater === true;
    this.children = new ChildPool(this.childDone);
  }

  /** children made so far; child.slot is its index (for a subclass's per-child state) */
  protected get poolSize(): number {
    return this.children.size;
  }

  submit(io: BdevIo): number {
    if (io.op !== IoOp.FLUSH && (io.offsetBytes < 0 || io.offsetBytes + io.lenBytes > this.sizeBytes)) return EINVAL;
    const child = this.children.take();
    child.op = io.op;
    // A flush covers the whole base whatever its range; the window does not apply.
    child.offsetBytes = io.op === IoOp.FLUSH ? io.offsetBytes : io.offsetBytes + this.shiftBytes;
    child.lenBytes = io.lenBytes;
    child.unmap = io.unmap;
    const n = 2 * io.niov;
    child.niov = io.niov;
    const src = io.iov;
    const dst = child.iov;
    for (let i = 0; i < n; i++) dst[i] = src[i]!;
    child.status = 0;
    child.ctx = io;
    const rc = this.base.submit(child);
    if (rc < 0) {
      this.children.give(child);
      return rc;
    }
    this.inFlight++;
    this.lastChild = child;
    return 0;
  }

  /** The base finished a child; a layer that holds completions (delay) overrides this. */
  protected baseDone(child: BdevIo): void {
    this.finish(child);
  }

  /** Complete the child's parent with the child's status, and recycle the child. */
  protected finish(child: BdevIo): void {
    const parent = child.ctx as BdevIo;
    parent.status = child.status;
    this.children.give(child);
    this.inFlight--;
    parent.done(parent);
  }

  /** Completions arrive through the base's poll(), which the reactor runs. */
  poll(): number {
    this.raiseDeferred();
    return 0;
  }

  /** Throw (from this channel's poll) what a completion of ours threw inside the base's poll. */
  protected raiseDeferred(): void {
    if (this.deferredError === undefined) return;
    const e = this.deferredError;
    this.deferredError = undefined;
    throw e;
  }

  inflight(): number {
    return this.inFlight;
  }

  /** The base reports what the kernel owes it (the reactor polls it as a channel of its own). */
  kernelInflight(): number {
    return 0;
  }

  clearNotify(): void {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.ctx.closeBase(this.baseDesc);
  }

  protected get isClosed(): boolean {
    return this.closed;
  }
}

/**
 * The info of a bdev that is a window of `base`: it inherits what the base
 * can do (flush, discard, read-only), where its I/O may run (singleReactor) and
 * whether its data dies with the process (volatile).
 */
export function windowInfo(name: string, type: string, base: BdevDesc, sizeBytes: number): BdevDesc['info'] {
  const b = base.info;
  return {
    name,
    type,
    blockSize: b.blockSize,
    sizeBytes,
    readonly: b.readonly,
    caps: { ...b.caps },
    maxDiscardBytes: b.maxDiscardBytes,
    ...(b.singleReactor ? { singleReactor: true } : {}),
    ...(b.volatile ? { volatile: true } : {}),
  };
}

/** A one-base layer's own keys (name, base), checked: its other keys are the module's to read. */
export function layerSpec(type: string, spec: Record<string, string>, keys: Record<string, string>): { name: string; base: string } {
  checkKeys(type, spec, keys, ['name', 'base']);
  if (spec.name === spec.base) throw new Error(`${type}: name=${spec.name} is its own base; give it a name of its own`);
  return { name: spec.name!, base: spec.base! };
}
