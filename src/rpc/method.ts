// One RPC method: its parameter schema, a one-line description and the handler.
// Handlers call the daemon's registries; they never reach into a frontend.
import { decodeParams, type Params, type Schema } from './schema.js';

export interface Method<C> {
  readonly help: string;
  readonly params: Schema;
  /** only meaningful before the daemon runs (SPDK's STARTUP state): rpc_get_methods' `current` list leaves it out */
  readonly startupOnly?: boolean;
  call(params: unknown, ctx: C, name: string): Promise<unknown>;
}

export function method<C, S extends Schema>(help: string, params: S, run: (p: Params<S>, ctx: C) => unknown, opts: { startupOnly?: boolean } = {}): Method<C> {
  return {
    help,
    params,
    startupOnly: opts.startupOnly ?? false,
    async call(raw, ctx, name) {
      return run(decodeParams(name, params, raw), ctx);
    },
  };
}

export type MethodTable<C> = Record<string, Method<C>>;
