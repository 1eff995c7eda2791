// A JSON-RPC 2.0 client for the daemon's socket (the `vdx` CLI uses it). It
// reads one JSON value back, as SPDK's rpc.py does, so it works against SPDK too.
import { createConnection } from 'node:net';
import { JsonStreamSplitter } from './json-stream.js';

/** The daemon answered with an error object. */
export class RpcCallError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export async function rpcCall(path: string, method: string, params?: Record<string, unknown>, timeoutMs = 60_000): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    // Replies can be large (bdev_get_bdevs of thousands of bdevs).
    const splitter = new JsonStreamSplitter(64 << 20);
    let done = false;
    const finish = (f: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      f();
    };
    const timer = setTimeout(() => finish(() => reject(new Error(`no answer from ${path} within ${timeoutMs / 1000} s`))), timeoutMs);
    sock.on('error', (e: NodeJS.ErrnoException) =>
      finish(() =>
        reject(new Error(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? `no vdx daemon at ${path} (is 'vdx serve' running? see --rpc-socket)` : `${path}: ${e.message}`)),
      ),
    );
    sock.on('connect', () => sock.write(JSON.stringify({ jsonrpc: '2.0', method, id: 1, ...(params ? { params } : {}) })));
    sock.on('close', () => finish(() => reject(new Error(`${path} closed the connection without an answer`))));
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      const item = splitter.push(d)[0];
      if (!item) return;
      if (item.kind !== 'value') return finish(() => reject(new Error(`${path} answered with something that is not JSON`)));
      let r: { result?: unknown; error?: { code: number; message: string } };
      try {
        r = JSON.parse(item.text) as typeof r;
      } catch (e) {
        return finish(() => reject(new Error(`${path} answered with invalid JSON: ${(e as Error).message}`)));
      }
      if (r.error) finish(() => reject(new RpcCallError(r.error!.code, String(r.error!.message))));
      else finish(() => resolve(r.result));
    });
  });
}
