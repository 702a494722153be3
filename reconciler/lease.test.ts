import { describe, expect, it } from 'vitest';
import { type Lease, nextLease, releasedLease } from './lease.ts';

const ME = { holder: 'pod-a_1234', namespace: 'sys', name: 'modelplane-affinity', leaseDurationMs: 15_000 };
const NOW = new Date('2026-01-02T03:04:05.678Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString().replace('Z', '000Z');

const lease = (holderIdentity: string, renewedMsAgo: number, extra: Partial<Lease['spec']> = {}): Lease => ({
  apiVersion: 'coordination.k8s.io/v1',
  kind: 'Lease',
  metadata: { name: 'modelplane-affinity', namespace: 'sys', resourceVersion: '42' },
  spec: { holderIdentity, leaseDurationSeconds: 15, renewTime: ago(renewedMsAgo), acquireTime: '2026-01-01T00:00:00.000000Z', leaseTransitions: 4, ...extra },
});

describe('nextLease', () => {
  it.each([
    { name: 'no Lease yet: create it, holding it, with no transitions', current: undefined, action: 'create', holder: ME.holder, transitions: 0, acquired: true },
    { name: 'ours and fresh: renew, keeping acquireTime and the transition count', current: lease(ME.holder, 2_000), action: 'update', holder: ME.holder, transitions: 4, acquired: false },
    { name: 'ours but expired (we were slow): still renew it as ours', current: lease(ME.holder, 60_000), action: 'update', holder: ME.holder, transitions: 4, acquired: false },
    { name: 'someone else holds a fresh Lease: wait', current: lease('pod-b_99', 14_000), action: 'wait', holder: 'pod-b_99' },
    { name: "someone else's Lease expired: take it, one more transition", current: lease('pod-b_99', 15_001), action: 'update', holder: ME.holder, transitions: 5, acquired: true },
    { name: 'a released Lease (no holder): take it at once', current: lease('', 0), action: 'update', holder: ME.holder, transitions: 5, acquired: true },
    { name: 'a Lease never renewed counts as expired', current: lease('pod-b_99', 0, { renewTime: undefined }), action: 'update', holder: ME.holder, transitions: 5, acquired: true },
  ])('$name', ({ current, action, holder, transitions, acquired }) => {
    const decision = nextLease(current, ME, NOW);
    expect(decision.action).toBe(action);
    if (decision.action === 'wait') return expect(decision.holder).toBe(holder);
    expect(decision.lease.spec).toMatchObject({ holderIdentity: holder, leaseDurationSeconds: 15, renewTime: '2026-01-02T03:04:05.678000Z', leaseTransitions: transitions });
    expect(decision.lease.spec.acquireTime).toBe(acquired ? '2026-01-02T03:04:05.678000Z' : '2026-01-01T00:00:00.000000Z');
    // A replace carries the resourceVersion it read: a concurrent writer gets 409, not a silent overwrite.
    if (current) expect(decision.lease.metadata.resourceVersion).toBe('42');
  });

  it('rounds a lease duration up to whole seconds', () => {
    const decision = nextLease(undefined, { ...ME, leaseDurationMs: 2_500 }, NOW);
    expect(decision.action === 'create' && decision.lease.spec.leaseDurationSeconds).toBe(3);
  });
});

describe('releasedLease', () => {
  it('hands back our Lease with no holder and a 1 s duration, so another replica takes it at once', () => {
    expect(releasedLease(lease(ME.holder, 1_000), ME)?.spec).toMatchObject({ holderIdentity: '', leaseDurationSeconds: 1, leaseTransitions: 4 });
  });
  it("never touches someone else's Lease", () => {
    expect(releasedLease(lease('pod-b_99', 1_000), ME)).toBeUndefined();
  });
});
