// Every RPC method vdx answers, one table per subsystem.
import type { MethodTable } from '../method.js';
import { bdevMethods } from './bdev.js';
import { exportMethods } from './export.js';
import type { RpcContext } from './context.js';
import { frameworkMethods } from './framework.js';
import { vduseMethods } from './vduse.js';
import { vhostMethods } from './vhost.js';

export const METHODS: MethodTable<RpcContext> = { ...frameworkMethods, ...bdevMethods, ...vhostMethods, ...vduseMethods, ...exportMethods };
