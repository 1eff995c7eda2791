// The daemon's JSON-RPC 2.0 socket, framed as SPDK's target frames it: a stream
// of JSON values each way (requests need no newline; each reply ends with one,
// as SPDK's do), several requests per
// connection, answered in order. A connection that sends bytes no request can
// start with, or a request over the size limit, gets -32700 / -32600 and is
// closed; other connections never notice.
import { chmodSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { RpcDispatcher } from './dispatch.js';
import { RPC_INVALID_REQUEST, RPC_PARSE_ERROR } from './errors.js';
import { JsonStreamSplitter } from './json-stream.js';
import { claimSocketPath } from '../net/socket-path.js';

/** Largest request accepted, in characters. */
export const MAX_REQUEST_CHARS = 4 << 20;
/** Requests read ahead on one connection before it is paused (a client that never reads its replies must not grow the daemon). */
const MAX_QUEUED = 64;
/** Connections at once; more are closed as they come. */
const MAX_CONNECTIONS = 128;

export class RpcServer {
  private server: Server | undefined;
  private readonly conns = new Set<Socket>();

  constructor(
    readonly path: string,
    private readonly dispatcher: RpcDispatcher<unknown>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    await claimSocketPath(this.path, '--rpc-socket ');
    this.server = createServer({ allowHalfOpen: true }, (sock) => this.serve(sock));
    this.server.maxConnections = MAX_CONNECTIONS;
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
    let queued = 0;
    const resumeIfRoom = () => {
      if (queued < MAX_QUEUED && !sock.writableNeedDrain && !sock.destroyed) sock.resume();
    };
    const send = (text: string) => {
      if (sock.destroyed) return;
      if (!sock.write(text)) {
        sock.pause();
        sock.once('drain', resumeIfRoom);
      }
    };
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      for (const item of splitter.push(d)) {
        if (item.kind === 'value') {
          if (++queued >= MAX_QUEUED) sock.pause();
          chain = chain.then(async () => {
            const reply = await this.dispatcher.handleText(item.text);
            if (reply !== undefined) send(`${reply}\n`);
            queued--;
            resumeIfRoom();
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
