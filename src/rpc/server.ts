// The daemon's JSON-RPC 2.0 socket, framed as SPDK's target frames it: a stream
// of JSON values each way (requests need no newline; each reply ends with one,
// as SPDK's do), several requests per
// connection, answered in order. A connection that sends bytes no request can
// start with, or a request over the size limit, gets -32700 / -32600 and is
// closed; other connections never notice.
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import type { RpcDispatcher } from './dispatch.js';
import { RPC_INVALID_REQUEST, RPC_PARSE_ERROR } from './errors.js';
import { JsonStreamSplitter } from './json-stream.js';

/** Largest request accepted, in characters. */
export const MAX_REQUEST_CHARS = 4 << 20;

export class RpcServer {
  private server: Server | undefined;
  private readonly conns = new Set<Socket>();

  constructor(
    readonly path: string,
    private readonly dispatcher: RpcDispatcher<unknown>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    if (existsSync(this.path)) {
      if (!lstatSync(this.path).isSocket()) throw new Error(`--rpc-socket ${this.path} exists and is not a socket`);
      // A live daemon answers; only a stale socket may be replaced.
      if (await socketAnswers(this.path)) throw new Error(`another vdx daemon is running with control socket ${this.path}; choose another --rpc-socket`);
      unlinkSync(this.path);
    }
    // Half-open: a client may shut down its sending side after its requests (echo ... | nc -N) and
    // still be owed every reply; serve() ends the connection once they are written.
    this.server = createServer({ allowHalfOpen: true }, (sock) => this.serve(sock));
    await new Promise<void>((res, rej) => {
      this.server!.once('error', rej);
      this.server!.listen(this.path, () => {
        chmodSync(this.path, 0o600);
        this.log.info({ component: 'rpc', socket: this.path }, 'JSON-RPC socket listening');
        res();
      });
    });
  }

  private serve(sock: Socket): void {
    this.conns.add(sock);
    const splitter = new JsonStreamSplitter(MAX_REQUEST_CHARS);
    // Replies go out in request order, even when a later request finishes first.
    let chain: Promise<void> = Promise.resolve();
    const send = (text: string) => {
      if (!sock.destroyed) sock.write(text);
    };
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      for (const item of splitter.push(d)) {
        if (item.kind === 'value') {
          chain = chain.then(async () => {
            const reply = await this.dispatcher.handleText(item.text);
            if (reply !== undefined) send(`${reply}\n`);
          });
          continue;
        }
        const [code, message] =
          item.kind === 'garbage'
            ? [RPC_PARSE_ERROR, `Parse error: a request must be a JSON object or array; got ${JSON.stringify(item.text)}`]
            : [RPC_INVALID_REQUEST, `Invalid request: larger than ${MAX_REQUEST_CHARS} bytes`];
        this.log.warn({ component: 'rpc', code }, message);
        chain = chain.then(() => {
          send(`${JSON.stringify({ jsonrpc: "2.0", id: null, error: { code, message } })}\n`);
          sock.end();
        });
      }
    });
    sock.on('end', () => {
      chain = chain.then(() => {
        sock.end();
      });
    });
    sock.on('error', () => {});
    sock.on('close', () => this.conns.delete(sock));
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    const closed = new Promise<void>((res) => this.server!.close(() => res()));
    for (const c of this.conns) c.destroy();
    await closed;
    this.server = undefined;
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise<boolean>((res) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      res(true);
    });
    c.once('error', () => res(false));
  });
}
