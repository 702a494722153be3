import { describe, expect, it } from 'vitest';
import type { KubeObject } from './model-service.ts';
import { crossNamespaceLabels } from './naming.ts';
import { crossNamespaceOwnerKey, isLabelledFor, isUpToDate, objectsToPrune } from './ownership.ts';

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

describe('crossNamespaceOwnerKey', () => {
  const at = (namespace: string, labels: Record<string, string>): KubeObject => ({ apiVersion: 'v1', kind: 'X', metadata: { name: 'p', namespace, labels } });
  const long = `${'abc.'.repeat(63)}z`;
  it.each([
    { name: 'our three labels in another namespace name the owner', object: at('gw', crossNamespaceLabels('ml', 'kimi')), key: 'ml/kimi' },
    { name: "a long name is keyed by its label value, the one the owner's key uses", object: at('gw', crossNamespaceLabels('ml', long)), key: `ml/${crossNamespaceLabels('ml', long)['affinity.modelplane.ai/model-service']}` },
    { name: "in the owner's own namespace: no (ownerReferences decide there)", object: at('ml', crossNamespaceLabels('ml', 'kimi')), key: undefined },
    { name: 'without managed-by: not ours', object: at('gw', { 'affinity.modelplane.ai/model-service': 'kimi', 'affinity.modelplane.ai/model-service-namespace': 'ml' }), key: undefined },
    { name: 'without the namespace label: not ours', object: at('gw', { 'app.kubernetes.io/managed-by': 'modelplane-affinity', 'affinity.modelplane.ai/model-service': 'kimi' }), key: undefined },
  ])('$name', ({ object, key }) => expect(crossNamespaceOwnerKey(object)).toBe(key));

  it('matches the ModelService the labels name, and no other', () => {
    const object = at('gw', crossNamespaceLabels('ml', long));
    expect(isLabelledFor(object, { metadata: { name: long, namespace: 'ml' } })).toBe(true);
    expect(isLabelledFor(object, { metadata: { name: long, namespace: 'other' } })).toBe(false);
    expect(isLabelledFor(object, { metadata: { name: 'kimi', namespace: 'ml' } })).toBe(false);
  });
});
