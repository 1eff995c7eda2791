// JSON-RPC 2.0 request handling (single requests, batches, notifications) with
// SPDK's error codes. Pure over text: the server feeds it complete values.
import type { Logger } from 'pino';
import { ControlError } from '../control/errors.js';
import { RPC_INTERNAL_ERROR, RPC_INVALID_REQUEST, RPC_METHOD_NOT_FOUND, RPC_PARSE_ERROR } from './errors.js';
import type { MethodTable } from './method.js';

type Id = string | number | null;

interface Response {
  jsonrpc: '2.0';
  id: Id;
  result?: unknown;
  error?: { code: number; message: string };
}

/** Most requests one batch may carry; a larger one is refused whole. */
export const MAX_BATCH = 1024;

function errorResponse(id: Id, code: number, message: string): Response {
  return { jsonrpc: '2.0', id, error: { code, message } };
}

export class RpcDispatcher<C> {
  constructor(
    private readonly methods: MethodTable<C>,
    private readonly ctx: C,
    private readonly log: Logger,
    /** after each call that succeeded, before its reply is sent (the daemon saves its running state) */
    private readonly afterCall?: (method: string) => void,
  ) {}

  /** Handle one JSON value's text; resolves with the reply text, or undefined when nothing is owed (notifications). */
  async handleText(text: string): Promise<string | undefined> {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      return JSON.stringify(errorResponse(null, RPC_PARSE_ERROR, `Parse error: ${(e as Error).message}`));
    }
    if (Array.isArray(v)) {
      if (v.length === 0) return JSON.stringify(errorResponse(null, RPC_INVALID_REQUEST, 'Invalid request: empty batch'));
      if (v.length > MAX_BATCH) return JSON.stringify(errorResponse(null, RPC_INVALID_REQUEST, `Invalid request: a batch of ${v.length} requests; at most ${MAX_BATCH}`));
      // In order: a batch that creates a bdev and then exports it must see the bdev.
      const out: string[] = [];
      for (const r of v) {
        const res = await this.handle(r);
        if (res) out.push(this.encode(res));
      }
      return out.length ? `[${out.join(',')}]` : undefined;
    }
    const res = await this.handle(v);
    return res ? this.encode(res) : undefined;
  }

  /** The reply's text; a result JSON cannot carry (a BigInt, a cycle) is -32603, so handleText never rejects. */
  private encode(res: Response): string {
    try {
      return JSON.stringify(res);
    } catch (e) {
      this.log.warn({ component: 'rpc', err: (e as Error).message }, 'result is not JSON');
      return JSON.stringify(errorResponse(res.id, RPC_INTERNAL_ERROR, `the result cannot be sent as JSON: ${(e as Error).message}`));
    }
  }

  private async handle(req: unknown): Promise<Response | undefined> {
    if (typeof req !== 'object' || req === null || Array.isArray(req)) {
      return errorResponse(null, RPC_INVALID_REQUEST, 'Invalid request: expected an object with "jsonrpc", "method" and "id"');
    }
    const r = req as Record<string, unknown>;
    const hasId = 'id' in r;
    const id = r.id;
    if (hasId && id !== null && typeof id !== 'string' && typeof id !== 'number') {
      return errorResponse(null, RPC_INVALID_REQUEST, 'Invalid request: "id" must be a string, a number or null');
    }
    const rid = (hasId ? id : null) as Id;
    if (r.jsonrpc !== '2.0') return errorResponse(rid, RPC_INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"');
    if (typeof r.method !== 'string') return errorResponse(rid, RPC_INVALID_REQUEST, 'Invalid request: "method" must be a string');
    for (const k of Object.keys(r)) {
      if (k !== 'jsonrpc' && k !== 'method' && k !== 'params' && k !== 'id') {
        return errorResponse(rid, RPC_INVALID_REQUEST, `Invalid request: unknown member "${k}"`);
      }
    }
    const name = r.method;
    const m = Object.hasOwn(this.methods, name) ? this.methods[name] : undefined;
    let res: Response;
    if (!m) {
      res = errorResponse(rid, RPC_METHOD_NOT_FOUND, `Method not found: '${name}' (rpc_get_methods lists the methods)`);
    } else {
      try {
        const result = await m.call(r.params, this.ctx, name);
        this.afterCall?.(name);
        res = { jsonrpc: '2.0', id: rid, result: result === undefined ? true : result };
      } catch (e) {
        if (e instanceof ControlError) res = errorResponse(rid, e.code, e.message);
        else {
          // A handler's plain Error is a refused operation with a clear message, not a crash.
          // Anything may be thrown (undefined, a string): never let reading it throw.
          const message = e instanceof Error ? e.message : String(e);
          this.log.warn({ component: 'rpc', method: name, err: message }, 'request failed');
          res = errorResponse(rid, RPC_INTERNAL_ERROR, message);
        }
      }
    }
    return hasId ? res : undefined;
  }
}
