// Leader election on a coordination.k8s.io/v1 Lease, so that of several
// replicas exactly one writes. Optimistic concurrency (resourceVersion) makes
// acquisition safe; a leader that cannot renew within renewDeadline steps down
// (the caller stops writing and exits, as controller-runtime does).
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient, resourcePath } from './kube.ts';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  logger: Logger;
}

interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

const microTime = (d: Date) => d.toISOString().replace('Z', '000Z');

export class LeaderElector {
  private readonly client: KubeClient;
  private readonly options: LeaderElectionOptions;
  private stopped = false;
  private leading = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(client: KubeClient, options: LeaderElectionOptions) {
    this.client = client;
    this.options = options;
  }

  private ref(name?: string) {
    return { apiVersion: 'coordination.k8s.io/v1', plural: 'leases', namespace: this.options.namespace, ...(name ? { name } : {}) };
  }

  /** One attempt to acquire or renew; true when we hold the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date();
    const { identity, leaseDurationMs, name, namespace } = this.options;
    const spec = { holderIdentity: identity, leaseDurationSeconds: Math.ceil(leaseDurationMs / 1000), renewTime: microTime(now) };
    let lease: Lease;
    try {
      lease = await this.client.get<Lease>(this.ref(name));
    } catch (error) {
      if (!(error instanceof KubeApiError && error.status === 404)) throw error;
      await this.client.create(this.ref(), {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name, namespace },
        spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
      });
      return true;
    }
    const holder = lease.spec.holderIdentity ?? '';
    const renewed = lease.spec.renewTime ? Date.parse(lease.spec.renewTime) : 0;
    const duration = (lease.spec.leaseDurationSeconds ?? 0) * 1000;
    const expired = holder === '' || renewed + duration < now.getTime();
    if (holder !== identity && !expired) return false;
    const transitions = (lease.spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    // PUT with the resourceVersion we read: a concurrent writer makes this fail with 409.
    await this.client.request('PUT', resourcePath(this.ref(name)), {
      body: {
        ...lease,
        spec: { ...lease.spec, ...spec, acquireTime: holder === identity ? lease.spec.acquireTime : microTime(now), leaseTransitions: transitions },
      },
    });
    return true;
  }

  /**
   * Blocks until this replica leads, then keeps renewing. `onLost` is called
   * once if the lease cannot be renewed within renewDeadline.
   */
  async run(onStartedLeading: () => void, onLost: () => void): Promise<void> {
    const { retryPeriodMs, renewDeadlineMs, logger, identity } = this.options;
    while (!this.stopped) {
      const ok = await this.tryAcquireOrRenew().catch((error: Error) => {
        if (!(error instanceof KubeApiError && error.status === 409)) logger.warn({ error: error.message }, 'lease acquire failed');
        return false;
      });
      if (ok) break;
      await new Promise((r) => (this.timer = setTimeout(r, retryPeriodMs)));
    }
    if (this.stopped) return;
    this.leading = true;
    logger.info({ identity, lease: `${this.options.namespace}/${this.options.name}` }, 'became leader');
    onStartedLeading();
    let lastRenew = Date.now();
    const renew = async () => {
      if (this.stopped) return;
      const ok = await this.tryAcquireOrRenew().catch(() => false);
      if (ok) lastRenew = Date.now();
      if (!ok && Date.now() - lastRenew > renewDeadlineMs) {
        this.leading = false;
        logger.error({ identity }, 'lost leadership: could not renew the lease in time');
        onLost();
        return;
      }
      this.timer = setTimeout(() => void renew(), retryPeriodMs);
    };
    this.timer = setTimeout(() => void renew(), retryPeriodMs);
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** Stops renewing and, if leading, releases the lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.client.get<Lease>(this.ref(this.options.name));
      if (lease.spec.holderIdentity === this.options.identity) {
        await this.client.request('PUT', resourcePath(this.ref(this.options.name)), {
          body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } },
        });
      }
    } catch (error) {
      this.options.logger.warn({ error: (error as Error).message }, 'could not release the lease');
    }
  }
}
