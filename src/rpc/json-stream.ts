// Splits a byte stream into top-level JSON values, as SPDK's JSON-RPC server
// reads its socket: requests are concatenated JSON objects or arrays, not lines
// (SPDK's rpc.py sends pretty-printed, multi-line requests with no trailing
// newline). The scan keeps its place between chunks, so a request split over
// many reads costs one pass over its bytes.

export type StreamItem =
  /** the text of one complete top-level object or array */
  | { kind: 'value'; text: string }
  /** bytes that cannot start a JSON-RPC request: the stream cannot be resynchronised */
  | { kind: 'garbage'; text: string }
  /** a value longer than the limit: the stream cannot continue */
  | { kind: 'oversize'; bytes: number };

const OPEN_OBJ = 0x7b; // {
const CLOSE_OBJ = 0x7d; // }
const OPEN_ARR = 0x5b; // [
const CLOSE_ARR = 0x5d; // ]
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

export class JsonStreamSplitter {
  private buf = '';
  /** scan position within buf */
  private pos = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;
  /** a fatal item was returned: everything after it is ignored */
  private dead = false;

  constructor(private readonly maxValueChars = 1 << 20) {}

  /** Feed decoded text; returns the items completed by it, in order. */
  push(chunk: string): StreamItem[] {
    const out: StreamItem[] = [];
    if (this.dead) return out;
    this.buf += chunk;
    const b = this.buf;
    let start = 0;
    let i = this.pos;
    for (; i < b.length; i++) {
      const c = b.charCodeAt(i);
      if (this.depth === 0) {
        if (isSpace(c)) {
          start = i + 1;
          continue;
        }
        if (c !== OPEN_OBJ && c !== OPEN_ARR) {
          this.dead = true;
          out.push({ kind: 'garbage', text: b.slice(i, i + 64) });
          this.buf = '';
          this.pos = 0;
          return out;
        }
        start = i;
        this.depth = 1;
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) this.inString = false;
        continue;
      }
      if (c === QUOTE) this.inString = true;
      else if (c === OPEN_OBJ || c === OPEN_ARR) this.depth++;
      else if (c === CLOSE_OBJ || c === CLOSE_ARR) {
        if (--this.depth === 0) {
          // The limit holds for a value completed within one chunk too, not only for the unfinished tail.
          if (i + 1 - start > this.maxValueChars) {
            this.dead = true;
            out.push({ kind: 'oversize', bytes: i + 1 - start });
            this.buf = '';
            this.pos = 0;
            return out;
          }
          out.push({ kind: 'value', text: b.slice(start, i + 1) });
          start = i + 1;
        }
      }
    }
    // Keep only the unfinished value (or nothing).
    this.buf = this.depth === 0 ? '' : b.slice(start);
    this.pos = this.buf.length;
    if (this.buf.length > this.maxValueChars) {
      this.dead = true;
      out.push({ kind: 'oversize', bytes: this.buf.length });
      this.buf = '';
      this.pos = 0;
    }
    return out;
  }

  /** Characters of an unfinished value held (for a connection closed mid-request). */
  pending(): number {
    return this.buf.length;
  }
}
