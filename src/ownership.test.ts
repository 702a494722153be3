import { describe, expect, it } from 'vitest';
import type { KubeObject } from './model-service.ts';
import { isUpToDate, objectsToPrune } from './ownership.ts';

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
