// JSON-RPC 2.0 error codes as SPDK's target uses them (include/spdk/jsonrpc.h).
// Method failures carry a negative errno instead (control/errors.ts).
import { ControlError } from '../control/errors.js';

export const RPC_PARSE_ERROR = -32700;
export const RPC_INVALID_REQUEST = -32600;
export const RPC_METHOD_NOT_FOUND = -32601;
export const RPC_INVALID_PARAMS = -32602;
export const RPC_INTERNAL_ERROR = -32603;

/** An error with a JSON-RPC code; anything else a handler throws is -32603. */
export class RpcError extends ControlError {}

export function invalidParams(message: string): RpcError {
  return new RpcError(RPC_INVALID_PARAMS, message);
}
