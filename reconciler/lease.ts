// The leader-election decision on a coordination.k8s.io/v1 Lease, without I/O:
// given the Lease as read (or none), who we are and the time, what to write.
// leader.ts reads, calls this, and hands the result to the writer.

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface Lease {
  apiVersion: 'coordination.k8s.io/v1';
  kind: 'Lease';
  metadata: { name: string; namespace: string; resourceVersion?: string; [key: string]: unknown };
  spec: LeaseSpec;
}

export interface LeaseIdentity {
  /** holderIdentity: the pod name plus a random suffix, so a restarted pod is a new candidate. */
  holder: string;
  namespace: string;
  name: string;
  leaseDurationMs: number;
}

export type LeaseDecision =
  /** No Lease yet: create it, holding it. */
  | { action: 'create'; lease: Lease }
  /** Renew ours, or take an expired or released one: replace it (with the resourceVersion read, so a race gives 409). */
  | { action: 'update'; lease: Lease }
  /** Someone else holds it and it has not expired. */
  | { action: 'wait'; holder: string };

/** Lease times are MicroTime: RFC 3339 with microseconds. */
export const microTime = (d: Date) => d.toISOString().replace('Z', '000Z');

/** What to write to acquire or renew the Lease, or to wait. */
export function nextLease(lease: Lease | undefined, identity: LeaseIdentity, now: Date): LeaseDecision {
  const spec: LeaseSpec = { holderIdentity: identity.holder, leaseDurationSeconds: Math.ceil(identity.leaseDurationMs / 1000), renewTime: microTime(now) };
  if (!lease) {
    return {
      action: 'create',
      lease: {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name: identity.name, namespace: identity.namespace },
        spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
      },
    };
  }
  const holder = lease.spec.holderIdentity ?? '';
  const renewed = lease.spec.renewTime ? Date.parse(lease.spec.renewTime) : 0;
  const duration = (lease.spec.leaseDurationSeconds ?? 0) * 1000;
  const ours = holder === identity.holder;
  const expired = holder === '' || renewed + duration < now.getTime();
  if (!ours && !expired) return { action: 'wait', holder };
  return {
    action: 'update',
    lease: {
      ...lease,
      spec: {
        ...lease.spec,
        ...spec,
        acquireTime: ours ? lease.spec.acquireTime : microTime(now),
        leaseTransitions: (lease.spec.leaseTransitions ?? 0) + (ours ? 0 : 1),
      },
    },
  };
}

/** The Lease handed back on shutdown, so another replica takes over at once; undefined when it is not ours. */
export function releasedLease(lease: Lease, identity: Pick<LeaseIdentity, 'holder'>): Lease | undefined {
  if (lease.spec.holderIdentity !== identity.holder) return undefined;
  return { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1 } };
}
