// NBD transmission codec, sans I/O (NetworkBlockDevice/nbd doc/proto.md,
// "Transmission phase"): request headers written into a caller's buffer, and
// an incremental reader for simple replies and structured reply chunks that
// validates every field the server sends before anything reaches guest memory.
// Pure: no native calls, no allocation per reply; a connection owns one reader.

export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const NBD_REQUEST_SIZE = 28;
export const NBD_SIMPLE_REPLY_SIZE = 16;
export const NBD_CHUNK_HEADER_SIZE = 20;

export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_WRITE_ZEROES = 6;

export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;

export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;

export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_ERROR = 32769;
export const NBD_REPLY_TYPE_ERROR_OFFSET = 32770;
const REPLY_TYPE_ERROR_BIT = 0x8000;

/** Longest string the protocol allows (proto.md: "MUST NOT exceed 4096 bytes"). */
export const NBD_MAX_STRING = 4096;

const EINVAL = 22;
const ESHUTDOWN = 108;
const EPROTO = 71;

/** Slot state shared by a channel and its readers; `cmd` FREE = no request. */
export const SLOT_FREE = 255;

/**
 * What the reader knows about requests in flight, indexed by slot (the low
 * half of the cookie; the high half is the slot's generation). The channel
 * owns and fills it; the reader checks each reply against it.
 */
export interface SlotTable {
  readonly cmd: Uint8Array;
  readonly gen: Uint32Array;
  /** connection the request was sent on; a reply from another one is a stray */
  readonly conn: Int16Array;
  readonly offsetBytes: Float64Array;
  readonly lenBytes: Float64Array;
  /** bytes of a READ delivered so far (data + holes) */
  readonly covered: Float64Array;
  /**
   * request-relative end of a READ's last data/hole chunk: chunks must come in
   * ascending offset order without overlap, so that `covered` equal to the
   * length means every byte arrived (qemu-nbd and nbdkit send them in order)
   */
  readonly end: Float64Array;
  /** first error for the request (-errno), 0 if none */
  readonly err: Int32Array;
  /** 1 once the whole request (header and payload) left for the server: only then may it be answered */
  readonly sent: Uint8Array;
}

export function makeSlotTable(n: number): SlotTable {
  return {
    cmd: new Uint8Array(n).fill(SLOT_FREE),
    gen: new Uint32Array(n),
    conn: new Int16Array(n).fill(-1),
    offsetBytes: new Float64Array(n),
    lenBytes: new Float64Array(n),
    covered: new Float64Array(n),
    end: new Float64Array(n),
    err: new Int32Array(n),
    sent: new Uint8Array(n),
  };
}

/** Where the reader delivers validated replies (the channel: guest memory). */
export interface ReplySink {
  /** READ data for `slot`: `len` bytes at `bufOffset` of the buffer given to feed(), for request byte `reqOffset`. */
  data(slot: number, reqOffset: number, bufOffset: number, len: number): void;
  /** READ hole: `len` zero bytes at request byte `reqOffset`. */
  hole(slot: number, reqOffset: number, len: number): void;
  /** The request's reply is complete; table.err[slot] is its status. */
  done(slot: number): void;
}

/** Compact request header (proto.md "Request message"), 28 bytes at `at`. */
export function encodeRequest(
  dv: DataView,
  at: number,
  cmdFlags: number,
  type: number,
  cookieHi: number,
  cookieLo: number,
  offsetBytes: number,
  lenBytes: number,
): void {
  dv.setUint32(at, NBD_REQUEST_MAGIC);
  dv.setUint16(at + 4, cmdFlags);
  dv.setUint16(at + 6, type);
  dv.setUint32(at + 8, cookieHi);
  dv.setUint32(at + 12, cookieLo);
  dv.setUint32(at + 16, Math.floor(offsetBytes / 0x1_0000_0000));
  dv.setUint32(at + 20, offsetBytes % 0x1_0000_0000);
  dv.setUint32(at + 24, lenBytes);
}

/**
 * NBD error values to -errno (proto.md "Error values"). The defined values
 * equal Linux's; anything else is EINVAL, as the spec says to treat it.
 */
export function nbdErrno(v: number): number {
  switch (v) {
    case 1: // EPERM
    case 5: // EIO
    case 12: // ENOMEM
    case 22: // EINVAL
    case 28: // ENOSPC
    case 75: // EOVERFLOW
    case 95: // ENOTSUP (EOPNOTSUPP on Linux)
    case 108: // ESHUTDOWN
      return -v;
    default:
      return -EINVAL;
  }
}

const S_HDR = 0;
const S_DATA_OFFSET = 1;
const S_DATA = 2;
const S_PAYLOAD = 3;
const S_SIMPLE_DATA = 4;

/**
 * Incremental reply parser for one connection. feed() accepts bytes split
 * anywhere; it returns 0, or -EPROTO when the server broke the protocol (the
 * connection must then be dropped: the stream can no longer be trusted).
 * `failedSlot` names the request the violation was about (-1 if none) and
 * `why` says what was wrong.
 */
export class ReplyReader {
  failedSlot = -1;
  why = '';
  private state = S_HDR;
  private readonly hb = new Uint8Array(32);
  private readonly hdv = new DataView(this.hb.buffer);
  private hfill = 0;
  private hsize = 4;
  private readonly pb = new Uint8Array(NBD_MAX_STRING + 32);
  private readonly pdv = new DataView(this.pb.buffer);
  private pfill = 0;
  private plen = 0;
  private slot = -1;
  private flags = 0;
  private type = 0;
  private remaining = 0;
  private reqPos = 0;

  constructor(
    private readonly table: SlotTable,
    private readonly sink: ReplySink,
    private readonly connId: number,
    /** structured replies negotiated (NBD_OPT_STRUCTURED_REPLY acked) */
    private readonly structured: boolean,
  ) {}

  /** Forget a partial reply (a new connection starts clean). */
  reset(): void {
    this.state = S_HDR;
    this.hfill = 0;
    this.hsize = 4;
    this.slot = -1;
    this.failedSlot = -1;
    this.why = '';
  }

  /** Is the reader between replies (nothing half-read)? */
  idle(): boolean {
    return this.state === S_HDR && this.hfill === 0;
  }

  feed(buf: Uint8Array, off: number, len: number): number {
    let pos = off;
    const end = off + len;
    while (pos < end) {
      switch (this.state) {
        case S_HDR: {
          const n = Math.min(this.hsize - this.hfill, end - pos);
          copyIn(this.hb, this.hfill, buf, pos, n);
          this.hfill += n;
          pos += n;
          if (this.hfill < this.hsize) break;
          if (this.hsize === 4) {
            const magic = this.hdv.getUint32(0);
            if (magic === NBD_SIMPLE_REPLY_MAGIC) this.hsize = NBD_SIMPLE_REPLY_SIZE;
            else if (magic === NBD_STRUCTURED_REPLY_MAGIC) this.hsize = NBD_CHUNK_HEADER_SIZE;
            else return this.fail(-1, 'bad reply magic');
            break;
          }
          const rc = this.hsize === NBD_SIMPLE_REPLY_SIZE ? this.simpleHeader() : this.chunkHeader();
          if (rc < 0) return rc;
          break;
        }
        case S_DATA_OFFSET: {
          const n = Math.min(8 - this.pfill, end - pos);
          copyIn(this.pb, this.pfill, buf, pos, n);
          this.pfill += n;
          pos += n;
          if (this.pfill < 8) break;
          const rc = this.dataOffset();
          if (rc < 0) return rc;
          break;
        }
        case S_DATA:
        case S_SIMPLE_DATA: {
          const n = Math.min(this.remaining, end - pos);
          this.sink.data(this.slot, this.reqPos, pos, n);
          this.reqPos += n;
          this.remaining -= n;
          pos += n;
          if (this.remaining > 0) break;
          if (this.state === S_SIMPLE_DATA) this.finish(this.slot);
          else {
            const rc = this.chunkEnd();
            if (rc < 0) return rc;
          }
          break;
        }
        case S_PAYLOAD: {
          const n = Math.min(this.plen - this.pfill, end - pos);
          copyIn(this.pb, this.pfill, buf, pos, n);
          this.pfill += n;
          pos += n;
          if (this.pfill < this.plen) break;
          const rc = this.payload();
          if (rc < 0) return rc;
          break;
        }
      }
    }
    return 0;
  }

  private fail(slot: number, why: string): number {
    this.failedSlot = slot;
    this.why = why;
    return -EPROTO;
  }

  /** The slot a cookie names on this connection, or -1 (unknown, stale generation or another connection's). */
  private lookup(hi: number, lo: number): number {
    const t = this.table;
    if (lo >= t.cmd.length || t.cmd[lo] === SLOT_FREE || t.gen[lo] !== hi || t.conn[lo] !== this.connId) return -1;
    return lo;
  }

  private nextHeader(): void {
    this.state = S_HDR;
    this.hfill = 0;
    this.hsize = 4;
  }

  private finish(slot: number): void {
    this.nextHeader();
    this.slot = -1;
    this.sink.done(slot);
  }

  private simpleHeader(): number {
    const h = this.hdv;
    const error = h.getUint32(4);
    const slot = this.lookup(h.getUint32(8), h.getUint32(12));
    if (slot < 0) return this.fail(-1, 'simple reply with an unknown cookie');
    const t = this.table;
    if (t.sent[slot] === 0) return this.fail(-1, 'reply to a request not yet fully sent');
    if (error !== 0) {
      if (error === ESHUTDOWN) return this.fail(-1, 'server is shutting down (ESHUTDOWN)');
      t.err[slot] = nbdErrno(error);
      this.finish(slot);
      return 0;
    }
    if (t.cmd[slot] === NBD_CMD_READ) {
      // With structured replies a successful READ must come as chunks
      // (proto.md "Structured reply chunk message").
      if (this.structured) return this.fail(slot, 'simple reply to a read after structured replies were negotiated');
      this.slot = slot;
      this.state = S_SIMPLE_DATA;
      this.remaining = t.lenBytes[slot]!;
      this.reqPos = 0;
      t.covered[slot] = this.remaining;
      if (this.remaining === 0) this.finish(slot);
      return 0;
    }
    this.finish(slot);
    return 0;
  }

  private chunkHeader(): number {
    const h = this.hdv;
    if (!this.structured) return this.fail(-1, 'structured reply chunk without structured replies negotiated');
    this.flags = h.getUint16(4);
    this.type = h.getUint16(6);
    const slot = this.lookup(h.getUint32(8), h.getUint32(12));
    const length = h.getUint32(16);
    if (slot < 0) return this.fail(-1, 'reply chunk with an unknown cookie');
    this.slot = slot;
    const t = this.table;
    if (t.sent[slot] === 0) return this.fail(-1, 'reply to a request not yet fully sent');
    const isRead = t.cmd[slot] === NBD_CMD_READ;
    switch (this.type) {
      case NBD_REPLY_TYPE_NONE:
        if (length !== 0) return this.fail(slot, 'NONE chunk with a payload');
        if ((this.flags & NBD_REPLY_FLAG_DONE) === 0) return this.fail(slot, 'NONE chunk without DONE');
        return this.chunkEnd();
      case NBD_REPLY_TYPE_OFFSET_DATA:
        if (!isRead) return this.fail(slot, 'data chunk for a request that is not a read');
        if (length <= 8 || length - 8 > t.lenBytes[slot]!) return this.fail(slot, 'data chunk length outside the request');
        this.remaining = length - 8;
        this.state = S_DATA_OFFSET;
        this.pfill = 0;
        return 0;
      case NBD_REPLY_TYPE_OFFSET_HOLE:
        if (!isRead) return this.fail(slot, 'hole chunk for a request that is not a read');
        if (length !== 12) return this.fail(slot, 'hole chunk length is not 12');
        break;
      default:
        if ((this.type & REPLY_TYPE_ERROR_BIT) === 0) return this.fail(slot, 'unknown reply chunk type');
        // Error chunks: u32 error, u16 message length, message[, u64 offset].
        if (length < 6 || length > 6 + NBD_MAX_STRING + 8) return this.fail(slot, 'error chunk length out of bounds');
        break;
    }
    this.plen = length;
    this.pfill = 0;
    this.state = S_PAYLOAD;
    return 0;
  }

  private dataOffset(): number {
    const t = this.table;
    const slot = this.slot;
    const at = this.readU64(0);
    const rel = at - t.offsetBytes[slot]!;
    if (at < 0 || rel < 0 || rel + this.remaining > t.lenBytes[slot]!) return this.fail(slot, 'data chunk outside the request');
    if (rel < t.end[slot]!) return this.fail(slot, 'read chunks overlap or are out of order');
    t.end[slot] = rel + this.remaining;
    t.covered[slot] = t.covered[slot]! + this.remaining;
    this.reqPos = rel;
    this.state = S_DATA;
    return 0;
  }

  private payload(): number {
    const t = this.table;
    const slot = this.slot;
    const p = this.pdv;
    if (this.type === NBD_REPLY_TYPE_OFFSET_HOLE) {
      const at = this.readU64(0);
      const size = p.getUint32(8);
      const rel = at - t.offsetBytes[slot]!;
      if (at < 0 || size === 0 || rel < 0 || rel + size > t.lenBytes[slot]!) return this.fail(slot, 'hole chunk outside the request');
      if (rel < t.end[slot]!) return this.fail(slot, 'read chunks overlap or are out of order');
      t.end[slot] = rel + size;
      t.covered[slot] = t.covered[slot]! + size;
      this.sink.hole(slot, rel, size);
      return this.chunkEnd();
    }
    const error = p.getUint32(0);
    const msglen = p.getUint16(4);
    if (error === 0) return this.fail(slot, 'error chunk with error 0');
    if (this.type === NBD_REPLY_TYPE_ERROR_OFFSET) {
      if (msglen + 14 !== this.plen) return this.fail(slot, 'error-offset chunk length does not match its message');
      const at = this.readU64(6 + msglen);
      const rel = at - t.offsetBytes[slot]!;
      if (at < 0 || rel < 0 || rel >= t.lenBytes[slot]!) return this.fail(slot, 'error offset outside the request');
    } else if (msglen + 6 > this.plen || msglen > NBD_MAX_STRING) {
      return this.fail(slot, 'error chunk message longer than the chunk');
    }
    if (error === ESHUTDOWN) return this.fail(-1, 'server is shutting down (ESHUTDOWN)');
    if (t.err[slot] === 0) t.err[slot] = nbdErrno(error);
    return this.chunkEnd();
  }

  private chunkEnd(): number {
    const slot = this.slot;
    if ((this.flags & NBD_REPLY_FLAG_DONE) === 0) {
      this.nextHeader();
      return 0;
    }
    const t = this.table;
    // A read that succeeded must have delivered every byte it asked for.
    if (t.cmd[slot] === NBD_CMD_READ && t.err[slot] === 0 && t.covered[slot] !== t.lenBytes[slot]) {
      return this.fail(slot, 'read completed without all of its data');
    }
    this.finish(slot);
    return 0;
  }

  /** u64 at `at` of the payload buffer as a number; -1 if beyond 2^53 (no request lives there). */
  private readU64(at: number): number {
    const hi = this.pdv.getUint32(at);
    const lo = this.pdv.getUint32(at + 4);
    return hi >= 0x20_0000 ? -1 : hi * 0x1_0000_0000 + lo;
  }
}

/** Small copies byte by byte: no subarray view per reply. */
function copyIn(dst: Uint8Array, at: number, src: Uint8Array, from: number, n: number): void {
  for (let i = 0; i < n; i++) dst[at + i] = src[from + i]!;
}
