// NBD fixed-newstyle handshake as a sans-IO state machine (proto.md
// "Handshake"): the caller moves bytes (node:net on the main thread, a
// non-blocking socket on a reactor); this decides what to send and validates
// everything received. Slow path: small allocations are fine here.
import { NBD_FLAG_HAS_FLAGS, NBD_MAX_STRING } from './codec.js';

export const NBDMAGIC = 0x4e42444d41474943n;
export const IHAVEOPT = 0x49484156454f5054n;
export const NBD_OPT_REPLY_MAGIC = 0x3e889045565a9n;
export const CLISERV_MAGIC = 0x00420281861253n;

export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;

export const NBD_REP_ACK = 1;
export const NBD_REP_INFO = 3;
export const NBD_REP_ERR_UNSUP = 0x80000001;
export const NBD_REP_ERR_POLICY = 0x80000002;
export const NBD_REP_ERR_INVALID = 0x80000003;
export const NBD_REP_ERR_PLATFORM = 0x80000004;
export const NBD_REP_ERR_TLS_REQD = 0x80000005;
export const NBD_REP_ERR_UNKNOWN = 0x80000006;
export const NBD_REP_ERR_SHUTDOWN = 0x80000007;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = 0x80000008;
export const NBD_REP_ERR_TOO_BIG = 0x80000009;

export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

/** What a server said about its export. */
export interface NbdExportInfo {
  sizeBytes: number;
  /** transmission flags (NBD_FLAG_*) */
  flags: number;
  structured: boolean;
  /** NBD_INFO_BLOCK_SIZE, or the spec's defaults when the server sent none */
  minBlock: number;
  preferredBlock: number;
  maxPayload: number;
  blockSizeInfo: boolean;
  /** GO was unsupported and NBD_OPT_EXPORT_NAME was used */
  exportNameFallback: boolean;
}

const ERR_TEXT: Record<number, string> = {
  [NBD_REP_ERR_UNSUP]: 'unsupported',
  [NBD_REP_ERR_POLICY]: 'refused by the server policy',
  [NBD_REP_ERR_INVALID]: 'invalid request',
  [NBD_REP_ERR_PLATFORM]: 'not supported on the server platform',
  [NBD_REP_ERR_TLS_REQD]: 'the server requires TLS, which vdx does not support',
  [NBD_REP_ERR_UNKNOWN]: 'no such export on the server',
  [NBD_REP_ERR_SHUTDOWN]: 'the server is shutting down',
  [NBD_REP_ERR_BLOCK_SIZE_REQD]: 'the server requires block size negotiation',
  [NBD_REP_ERR_TOO_BIG]: 'request too big',
};

const H_GREETING = 0;
const H_OPT_HDR = 1;
const H_OPT_DATA = 2;
const H_EXPORT_NAME = 3;
const H_DONE = 4;
const H_FAILED = 5;

/**
 * Most bytes a handshake may take. A real one is a few KiB at most (the
 * greeting, a handful of option replies with strings up to 4 KiB); a server
 * that streams NBD_REP_INFO without end is cut off here, on the reactors and
 * in the main thread's probe alike.
 */
export const NBD_MAX_HANDSHAKE_BYTES = 64 * 1024;

const isPow2 = (v: number) => v > 0 && (v & (v - 1)) === 0;

export class NbdHandshake {
  state: 'running' | 'done' | 'failed' = 'running';
  error = '';
  result: NbdExportInfo | undefined;
  private step = H_GREETING;
  private inbuf = new Uint8Array(256);
  /** unconsumed bytes are inbuf[inpos, infill) */
  private inpos = 0;
  private infill = 0;
  private total = 0;
  private readonly out: Uint8Array[] = [];
  private readonly name: Uint8Array;
  private noZeroes = false;
  private option = 0;
  private replyType = 0;
  private replyLen = 0;
  private structured = false;
  private size = -1;
  private flags = 0;
  private block: [number, number, number] | undefined;

  constructor(exportName: string) {
    this.name = new TextEncoder().encode(exportName);
    if (this.name.length > NBD_MAX_STRING) this.failWith(`export name longer than ${NBD_MAX_STRING} bytes`);
  }

  /** Next bytes to send, if any; the caller sends them in order. */
  takeOutput(): Uint8Array | undefined {
    return this.out.shift();
  }

  /** Bytes received from the server; any split is fine. Extra bytes after the handshake are an error. */
  push(bytes: Uint8Array): void {
    if (this.state !== 'running') {
      if (this.state === 'done' && bytes.length > 0) this.failWith('server sent data before any request');
      return;
    }
    this.total += bytes.length;
    if (this.total > NBD_MAX_HANDSHAKE_BYTES) {
      return this.failWith(`the server sent more than ${NBD_MAX_HANDSHAKE_BYTES / 1024} KiB without finishing the handshake`);
    }
    if (this.infill + bytes.length > this.inbuf.length) {
      // Compact only when out of room: messages are consumed by moving inpos.
      const keep = this.infill - this.inpos;
      const buf = keep + bytes.length > this.inbuf.length ? new Uint8Array(Math.max(this.inbuf.length * 2, keep + bytes.length)) : this.inbuf;
      buf.set(this.inbuf.subarray(this.inpos, this.infill));
      this.inbuf = buf;
      this.inpos = 0;
      this.infill = keep;
    }
    this.inbuf.set(bytes, this.infill);
    this.infill += bytes.length;
    for (;;) {
      const need = this.need();
      if (need < 0 || this.infill - this.inpos < need) break;
      // A view: handle() reads the message before anything else touches inbuf.
      const msg = this.inbuf.subarray(this.inpos, this.inpos + need);
      this.inpos += need;
      this.handle(msg);
      if (this.state !== 'running') {
        if (this.state === 'done' && this.infill > this.inpos) this.failWith('server sent data before any request');
        break;
      }
    }
    if (this.inpos === this.infill) this.inpos = this.infill = 0;
  }

  /** Bytes the current step waits for. */
  private need(): number {
    switch (this.step) {
      case H_GREETING:
        return 18;
      case H_OPT_HDR:
        return 20;
      case H_OPT_DATA:
        return this.replyLen;
      case H_EXPORT_NAME:
        return this.noZeroes ? 10 : 134;
      default:
        return -1;
    }
  }

  private failWith(why: string): void {
    this.state = 'failed';
    this.step = H_FAILED;
    this.error = why;
  }

  private sendOption(option: number, data: Uint8Array): void {
    const b = new Uint8Array(16 + data.length);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, IHAVEOPT);
    v.setUint32(8, option);
    v.setUint32(12, data.length);
    b.set(data, 16);
    this.out.push(b);
    this.option = option;
  }

  private sendGo(): void {
    const d = new Uint8Array(4 + this.name.length + 2 + 2);
    const v = new DataView(d.buffer);
    v.setUint32(0, this.name.length);
    d.set(this.name, 4);
    v.setUint16(4 + this.name.length, 1);
    v.setUint16(6 + this.name.length, NBD_INFO_BLOCK_SIZE);
    this.sendOption(NBD_OPT_GO, d);
    this.step = H_OPT_HDR;
  }

  private handle(m: Uint8Array): void {
    const v = new DataView(m.buffer, m.byteOffset, m.byteLength);
    switch (this.step) {
      case H_GREETING: {
        if (v.getBigUint64(0) !== NBDMAGIC) return this.failWith('not an NBD server (bad greeting magic)');
        const second = v.getBigUint64(8);
        if (second === CLISERV_MAGIC) return this.failWith('the server speaks oldstyle NBD; vdx needs fixed newstyle');
        if (second !== IHAVEOPT) return this.failWith('bad newstyle magic in the greeting');
        const hflags = v.getUint16(16);
        if ((hflags & NBD_FLAG_FIXED_NEWSTYLE) === 0) return this.failWith('the server is not fixed newstyle');
        // Send only the client flags the server offered, or it drops us (proto.md).
        this.noZeroes = (hflags & NBD_FLAG_NO_ZEROES) !== 0;
        const c = new Uint8Array(4);
        new DataView(c.buffer).setUint32(0, NBD_FLAG_C_FIXED_NEWSTYLE | (this.noZeroes ? NBD_FLAG_C_NO_ZEROES : 0));
        this.out.push(c);
        this.sendOption(NBD_OPT_STRUCTURED_REPLY, new Uint8Array(0));
        this.step = H_OPT_HDR;
        return;
      }
      case H_OPT_HDR: {
        if (v.getBigUint64(0) !== NBD_OPT_REPLY_MAGIC) return this.failWith('bad option reply magic');
        if (v.getUint32(8) !== this.option) return this.failWith(`option reply for option ${v.getUint32(8)}, expected ${this.option}`);
        this.replyType = v.getUint32(12);
        this.replyLen = v.getUint32(16);
        // Replies we accept carry at most a string plus a small fixed part.
        if (this.replyLen > NBD_MAX_STRING + 16) return this.failWith(`option reply of ${this.replyLen} bytes is too long`);
        if (this.replyLen === 0) return this.reply(new DataView(new ArrayBuffer(0)));
        this.step = H_OPT_DATA;
        return;
      }
      case H_OPT_DATA:
        this.step = H_OPT_HDR;
        return this.reply(v);
      case H_EXPORT_NAME: {
        this.setExport(v.getBigUint64(0), v.getUint16(8));
        if (this.state !== 'running') return;
        if (!this.noZeroes) {
          for (let i = 10; i < 134; i++) if (m[i] !== 0) return this.failWith('export-name reply padding is not zero');
        }
        return this.finish(true);
      }
    }
  }

  private setExport(size: bigint, flags: number): void {
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) return this.failWith('export size beyond 2^53 bytes');
    if ((flags & NBD_FLAG_HAS_FLAGS) === 0) return this.failWith('transmission flags without NBD_FLAG_HAS_FLAGS');
    this.size = Number(size);
    this.flags = flags;
  }

  private reply(d: DataView): void {
    const type = this.replyType;
    const serverText = () => {
      const s = new TextDecoder('utf-8', { fatal: false }).decode(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      return s.length > 0 ? `: ${s.replace(/[^\x20-\x7e]/g, '?').slice(0, 200)}` : '';
    };
    if (this.option === NBD_OPT_STRUCTURED_REPLY) {
      if (type === NBD_REP_ACK) {
        if (d.byteLength !== 0) return this.failWith('ACK with a payload');
        this.structured = true;
      } else if (type === NBD_REP_ERR_TLS_REQD) {
        return this.failWith(ERR_TEXT[type]!);
      } else if ((type & 0x80000000) === 0) {
        return this.failWith(`unexpected reply type ${type} to NBD_OPT_STRUCTURED_REPLY`);
      }
      // Any other error: carry on with simple replies.
      return this.sendGo();
    }
    // NBD_OPT_GO
    if (type === NBD_REP_INFO) {
      if (d.byteLength < 2) return this.failWith('NBD_REP_INFO without an info type');
      const info = d.getUint16(0);
      if (info === NBD_INFO_EXPORT) {
        if (d.byteLength !== 12) return this.failWith('NBD_INFO_EXPORT is not 12 bytes');
        return this.setExport(d.getBigUint64(2), d.getUint16(10));
      }
      if (info === NBD_INFO_BLOCK_SIZE) {
        if (d.byteLength !== 14) return this.failWith('NBD_INFO_BLOCK_SIZE is not 14 bytes');
        const min = d.getUint32(2), pref = d.getUint32(6), max = d.getUint32(10);
        // proto.md "Block size constraints".
        if (!isPow2(min) || min > 65536) return this.failWith(`minimum block size ${min} is not a power of 2 up to 64 KiB`);
        if (!isPow2(pref) || pref < min || pref > 32 * 1024 * 1024) return this.failWith(`preferred block size ${pref} is invalid`);
        if (max < min || (max !== 0xffffffff && max % min !== 0)) return this.failWith(`maximum payload ${max} is invalid for minimum block ${min}`);
        this.block = [min, pref, max];
        return;
      }
      // NAME, DESCRIPTION and info types we do not know are ignored (proto.md).
      return;
    }
    if (type === NBD_REP_ACK) {
      if (this.size < 0) return this.failWith('NBD_OPT_GO acknowledged without NBD_INFO_EXPORT');
      return this.finish(false);
    }
    if (type === NBD_REP_ERR_UNSUP) {
      // An old server: NBD_OPT_EXPORT_NAME has no error reply (an unknown export closes the connection).
      this.sendOption(NBD_OPT_EXPORT_NAME, this.name);
      this.step = H_EXPORT_NAME;
      return;
    }
    if ((type & 0x80000000) !== 0) return this.failWith(`NBD_OPT_GO: ${ERR_TEXT[type] ?? `error ${type.toString(16)}`}${serverText()}`);
    return this.failWith(`unexpected reply type ${type} to NBD_OPT_GO`);
  }

  private finish(fallback: boolean): void {
    const [min, pref, max] = this.block ?? [512, 4096, 32 * 1024 * 1024];
    this.result = {
      sizeBytes: this.size,
      flags: this.flags,
      structured: this.structured,
      minBlock: min,
      preferredBlock: pref,
      maxPayload: max,
      blockSizeInfo: this.block !== undefined,
      exportNameFallback: fallback,
    };
    this.state = 'done';
    this.step = H_DONE;
  }
}

/** NBD_OPT_ABORT, for a client that ends a handshake early. */
export function abortOption(): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, IHAVEOPT);
  v.setUint32(8, NBD_OPT_ABORT);
  return b;
}
