// The /metrics endpoint: node:http, GET or HEAD /metrics only. Main thread;
// `collect` runs once per scrape and may be async.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import { PROMETHEUS_CONTENT_TYPE } from './prometheus.js';

export interface MetricsAddr {
  host: string;
  port: number;
}

/** What the server logs; a pino Logger fits. */
export interface MetricsLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface MetricsServer {
  /** the port listened on (the one chosen when asked for port 0) */
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Parses `HOST:PORT` as node_exporter's --web.listen-address does: IPv4 or a
 * name (`127.0.0.1:9100`, `localhost:9100`), IPv6 in brackets (`[::1]:9100`),
 * or `:PORT` for every IPv4 interface. Port 0 asks for any free port. Throws an
 * Error naming what is wrong, for the command line.
 */
export function parseMetricsAddr(s: string, what = '--metrics'): MetricsAddr {
  const bad = (why: string) => new Error(`${what} '${s}': ${why} (expected HOST:PORT, e.g. 127.0.0.1:9100 or [::1]:9100)`);
  let host: string;
  let port: string;
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) throw bad("no ']' after the IPv6 address");
    host = s.slice(1, end);
    if (isIP(host) !== 6) throw bad(`'${host}' is not an IPv6 address`);
    if (s[end + 1] !== ':') throw bad("no ':PORT' after ']'");
    port = s.slice(end + 2);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon < 0) throw bad('no port');
    host = s.slice(0, colon);
    port = s.slice(colon + 1);
    if (host.includes(':')) throw bad(`an IPv6 address goes in brackets: [${host}]:${port}`);
    if (host === '') host = '0.0.0.0';
    else if (isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(host)) {
      throw bad(`'${host}' is neither an IP address nor a host name`);
    }
  }
  if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) throw bad(`port '${port}' must be an integer in 0..65535`);
  return { host, port: Number(port) };
}

/** Serve `collect()`'s text at GET /metrics on `addr`; resolves once listening. */
export async function startMetricsServer(addr: MetricsAddr, collect: () => Promise<string> | string, log: MetricsLog): Promise<MetricsServer> {
  const server = createServer((req, res) => void handle(req, res));
  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found: try /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    let body: string;
    try {
      body = await collect();
    } catch (e) {
      log.error({ err: (e as Error).message }, 'metrics: collecting failed');
      res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`collecting metrics failed: ${(e as Error).message}\n`);
      return;
    }
    const buf = Buffer.from(body, 'utf8');
    res.writeHead(200, { 'Content-Type': PROMETHEUS_CONTENT_TYPE, 'Content-Length': buf.length });
    res.end(req.method === 'HEAD' ? undefined : buf);
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(addr.port, addr.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((e: Error) => {
    throw new Error(`metrics: cannot listen on ${fmtAddr(addr)}: ${e.message}`);
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ addr: fmtAddr({ host: addr.host, port }) }, 'metrics: serving /metrics');
  server.on('error', (e) => log.error({ err: e.message }, 'metrics: server error'));
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function fmtAddr(a: MetricsAddr): string {
  return isIP(a.host) === 6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
