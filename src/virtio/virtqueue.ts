// What the request engine needs of a virtqueue, split or packed.
export interface Virtqueue {
  readonly size: number;
  /** why the ring is unusable; set once, never cleared */
  broken: string | undefined;
  /** how the last pop() mapped its chain: segment count or -errno */
  readonly lastChain: number;
  /** Next available buffer id (< size), NO_HEAD, or BROKEN; its segments go to `segs`. */
  pop(segs: Float64Array, maxSegs: number): number;
  /** Mark buffer `id` used with `lenBytes` written. */
  push(id: number, lenBytes: number): void;
  /** Make pushed entries visible (split) and say whether the driver wants an interrupt. */
  publish(): boolean;
  /** Ask for kicks before sleeping, or suppress them while polling. */
  setKicks(enabled: boolean): void;
  availPending(): boolean;
  /** where to resume after a stop (split: indices; packed: index | wrap << 15) */
  readonly lastAvail: number;
  readonly usedIdx: number;
}
