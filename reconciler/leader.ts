// Leader election on a coordination.k8s.io/v1 Lease, so that of several
// replicas exactly one writes. The decision is lease.ts's (pure), the write
// the writer's; this loop only reads, decides and times. A leader that cannot
// renew within renewDeadline steps down (the caller stops writing and exits,
// as controller-runtime does).
import type { Logger } from 'pino';
import { KubeApiError, type KubeClient } from './kube.ts';
import { type Lease, type LeaseIdentity, nextLease, releasedLease } from './lease.ts';
import type { Writer } from './writer.ts';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  logger: Logger;
}

export class LeaderElector {
  private readonly client: KubeClient;
  private readonly writer: Writer;
  private readonly options: LeaderElectionOptions;
  private readonly identity: LeaseIdentity;
  private stopped = false;
  private leading = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(client: KubeClient, writer: Writer, options: LeaderElectionOptions) {
    this.client = client;
    this.writer = writer;
    this.options = options;
    this.identity = { holder: options.identity, namespace: options.namespace, name: options.name, leaseDurationMs: options.leaseDurationMs };
  }

  private async read(): Promise<Lease | undefined> {
    const ref = { apiVersion: 'coordination.k8s.io/v1', plural: 'leases', namespace: this.options.namespace, name: this.options.name };
    try {
      return await this.client.get<Lease>(ref);
    } catch (error) {
      if (error instanceof KubeApiError && error.status === 404) return undefined;
      throw error;
    }
  }

  /** One attempt to acquire or renew; true when we hold the lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const decision = nextLease(await this.read(), this.identity, new Date());
    if (decision.action === 'wait') return false;
    // One throttled retry at most: the loop itself retries every retryPeriod, within the renew deadline.
    await this.writer.lease(decision.lease, decision.action, 2);
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

  /** Whether this replica holds the lease (readiness asks the reconciler's informers only of the leader). */
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
      const lease = await this.read();
      const released = lease && releasedLease(lease, this.identity);
      if (released) await this.writer.lease(released, 'update', 1);
    } catch (error) {
      this.options.logger.warn({ error: (error as Error).message }, 'could not release the lease');
    }
  }
}
