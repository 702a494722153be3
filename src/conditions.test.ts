import { describe, expect, it } from 'vitest';
import { Reasons, setAffinityReady } from './conditions.ts';
import type { KubeObject } from './model-service.ts';
import { isUpToDate, objectsToPrune } from './ownership.ts';

const t0 = new Date('2026-01-01T00:00:00.000Z');
const t1 = new Date('2026-01-02T00:00:00.000Z');

describe('setAffinityReady', () => {
  it('creates the condition with a transition time', () => {
    expect(setAffinityReady(undefined, { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t0)).toEqual({
      type: 'AffinityReady', status: 'True', reason: 'Applied', message: 'm', observedGeneration: 1, lastTransitionTime: '2026-01-01T00:00:00Z',
    });
  });

  it('returns undefined when nothing changed, so no status write happens', () => {
    const first = setAffinityReady(undefined, { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t0);
    expect(setAffinityReady([first!], { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t1)).toBeUndefined();
  });

  it('keeps the transition time when only the message changes, and moves it when the status flips', () => {
    const first = setAffinityReady(undefined, { status: 'True', reason: Reasons.Applied, message: 'm', observedGeneration: 1 }, t0)!;
    expect(setAffinityReady([first], { status: 'True', reason: Reasons.Applied, message: 'n', observedGeneration: 2 }, t1)?.lastTransitionTime).toBe('2026-01-01T00:00:00Z');
    expect(setAffinityReady([first], { status: 'False', reason: Reasons.ApplyFailed, message: 'x' }, t1)?.lastTransitionTime).toBe('2026-01-02T00:00:00Z');
  });
});

describe('objectsToPrune', () => {
  const obj = (kind: string, name: string, uid?: string, controller = true): KubeObject => ({
    apiVersion: 'v1', kind, metadata: { name, namespace: 'n', ...(uid ? { ownerReferences: [{ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', name: 'm', uid, controller }] } : {}) },
  });
  it('prunes only objects controlled by this owner that are no longer desired', () => {
    const live = [obj('Service', 'keep', 'u1'), obj('Service', 'stale', 'u1'), obj('Service', 'other-owner', 'u2'), obj('Service', 'no-owner'), obj('Service', 'not-controller', 'u1', false)];
    expect(objectsToPrune(live, [obj('Service', 'keep')], 'u1').map((o) => o.metadata.name)).toEqual(['stale']);
  });
});

describe('isUpToDate', () => {
  const desired: KubeObject = { apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'n', labels: { a: 'b' } }, spec: { ports: [{ port: 9002, name: 'grpc' }] } };
  it('is true when the live object has every desired field, plus server defaults', () => {
    const live = { ...desired, metadata: { ...desired.metadata, uid: 'u', labels: { a: 'b', extra: 'x' } }, spec: { ports: [{ port: 9002, name: 'grpc', protocol: 'TCP' }], clusterIP: '10.0.0.9' } };
    expect(isUpToDate(desired, live)).toBe(true);
  });
  it('is false after a hand edit, a removed field or an extra list item', () => {
    expect(isUpToDate(desired, { ...desired, spec: { ports: [{ port: 9003, name: 'grpc' }] } })).toBe(false);
    expect(isUpToDate(desired, { ...desired, metadata: { name: 's', namespace: 'n' } })).toBe(false);
    expect(isUpToDate(desired, { ...desired, spec: { ports: [{ port: 9002, name: 'grpc' }, { port: 1 }] } })).toBe(false);
    expect(isUpToDate(desired, undefined)).toBe(false);
  });
});
