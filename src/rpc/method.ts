// One RPC method: its parameter schema, a one-line description and the handler.
// Handlers call the daemon's registries; they never reach into a frontend.
import { decodeParams, type Params, type Schema } from './schema.js';

export interface Method<C> {
  readonly help: string;
  readonly params: Schema;
  call(params: unknown, ctx: C, name: string): Promise<unknown>;
}

export function method<C, S extends Schema>(help: string, params: S, run: (p: Params<S>, ctx: C) => unknown): Method<C> {
  return {
    help,
    params,
    async call(raw, ctx, name) {
      return run(decodeParams(name, params, raw), ctx);
    },
  };
}

export type MethodTable<C> = Record<string, Method<C>>;
