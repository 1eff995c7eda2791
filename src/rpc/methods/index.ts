// Every RPC method vdx answers, one table per subsystem.
import type { MethodTable } from '../method.js';
import { bdevMethods } from './bdev.js';
import { layerMethods } from './bdev-layers.js';
import { raidMethods } from './bdev-raid.js';
import { nbdMethods } from './bdev-nbd.js';
import { rbdMethods } from './bdev-rbd.js';
import { exportMethods } from './export.js';
import type { RpcContext } from './context.js';
import { frameworkMethods } from './framework.js';
import { vduseMethods } from './vduse.js';
import { vhostMethods } from './vhost.js';

export const METHODS: MethodTable<RpcContext> = { ...frameworkMethods, ...bdevMethods, ...rbdMethods, ...nbdMethods, ...layerMethods, ...raidMethods, ...vhostMethods, ...vduseMethods, ...exportMethods };
