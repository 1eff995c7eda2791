// Named Ceph cluster settings, as SPDK's bdev_rbd_register_cluster keeps them:
// rbd bdevs created with cluster_name take their connection settings from here
// (and share one rados connection, as the rbd module shares one per identical
// settings). A cluster in use by a bdev cannot be unregistered.
import { ControlError, EBUSY, EEXIST, ENODEV } from './errors.js';

export interface RbdCluster {
  name: string;
  /** Ceph id without "client." (SPDK's user_id) */
  userId: string | undefined;
  configFile: string | undefined;
  keyFile: string | undefined;
  /** Ceph options, as given (SPDK's config_param) */
  configParam: Record<string, string> | undefined;
}

export class RbdClusterRegistry {
  private readonly clusters = new Map<string, RbdCluster>();

  /** Register, or accept the same settings again (idempotent, as every create). */
  register(c: RbdCluster): RbdCluster {
    const old = this.clusters.get(c.name);
    if (old) {
      if (JSON.stringify(old) !== JSON.stringify(c)) throw new ControlError(EEXIST, `rbd cluster '${c.name}' is registered with other settings; unregister it first`);
      return old;
    }
    this.clusters.set(c.name, c);
    return c;
  }

  get(name: string): RbdCluster {
    const c = this.clusters.get(name);
    if (!c) throw new ControlError(ENODEV, `no rbd cluster '${name}'; registered: ${[...this.clusters.keys()].join(', ') || 'none'} (bdev_rbd_register_cluster makes one)`);
    return c;
  }

  list(): RbdCluster[] {
    return [...this.clusters.values()];
  }

  /** `users` names the bdevs made on it: they must go first. */
  unregister(name: string, users: string[]): void {
    this.get(name);
    if (users.length) throw new ControlError(EBUSY, `rbd cluster '${name}' is used by bdev ${users.join(', ')}; delete ${users.length > 1 ? 'them' : 'it'} first`);
    this.clusters.delete(name);
  }
}
