// The daemon's control socket: one JSON object per line each way,
// {"id", "method", "params"} -> {"id", "result"} | {"id", "error"}.
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server } from 'node:net';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

export type RpcHandler = (params: Record<string, unknown>) => Promise<unknown>;

export class RpcServer {
  private server: Server | undefined;

  constructor(
    readonly path: string,
    private readonly methods: Record<string, RpcHandler>,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    if (existsSync(this.path)) {
      if (!lstatSync(this.path).isSocket()) throw new Error(`--rpc-socket ${this.path} exists and is not a socket`);
      // A live daemon answers; only a stale socket may be replaced.
      const alive = await new Promise<boolean>((res) => {
        const c = createConnection(this.path);
        c.once('connect', () => {
          c.destroy();
          res(true);
        });
        c.once('error', () => res(false));
      });
      if (alive) throw new Error(`another vdx daemon is running with control socket ${this.path}; choose another --rpc-socket`);
      unlinkSync(this.path);
    }
    this.server = createServer((sock) => {
      let buf = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => {
        buf += d;
        if (buf.length > 1 << 20) {
          sock.destroy();
          return;
        }
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          void this.call(line).then((r) => sock.write(`${JSON.stringify(r)}\n`));
        }
      });
      sock.on('error', () => {});
    });
    return new Promise((res, rej) => {
      this.server!.once('error', rej);
      this.server!.listen(this.path, () => {
        chmodSync(this.path, 0o600);
        this.log.info({ component: 'rpc', socket: this.path }, 'control socket listening');
        res();
      });
    });
  }

  private async call(line: string): Promise<unknown> {
    let req: { id?: unknown; method?: unknown; params?: unknown };
    try {
      req = JSON.parse(line) as typeof req;
    } catch {
      return { id: null, error: 'request is not JSON' };
    }
    const m = typeof req.method === 'string' ? this.methods[req.method] : undefined;
    if (!m) return { id: req.id ?? null, error: `unknown method '${String(req.method)}'; methods: ${Object.keys(this.methods).join(', ')}` };
    try {
      return { id: req.id ?? null, result: await m((req.params ?? {}) as Record<string, unknown>) };
    } catch (e) {
      return { id: req.id ?? null, error: (e as Error).message };
    }
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    await new Promise<void>((res) => this.server!.close(() => res()));
    this.server = undefined;
  }
}

/** One request to a running daemon. */
export async function rpcCall(path: string, method: string, params: Record<string, unknown> = {}, timeoutMs = 30_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let buf = '';
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer from ${path} within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(new Error(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no vdx daemon at ${path} (is 'vdx serve' running? see --rpc-socket)` : e.message));
    });
    sock.on('connect', () => sock.write(`${JSON.stringify({ id: 1, method, params })}\n`));
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(t);
      sock.end();
      const r = JSON.parse(buf.slice(0, nl)) as { result?: unknown; error?: string };
      if (r.error !== undefined) reject(new Error(r.error));
      else resolve(r.result);
    });
  });
}
