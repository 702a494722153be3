import { describe, expect, it } from 'vitest';
import type { KubeObject, ModelService } from './model-service.ts';
import { routeShape, routeShapeWarnings, selectedRoutes } from './route-shape.ts';

const route = (name: string, labels: Record<string, string>, filters?: unknown[], namespace = 'ml'): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace, labels },
  spec: { rules: [{ backendRefs: [{ name: 'a', port: 80, ...(filters ? { filters } : {}) }, { name: 'b', port: 80 }] }] },
});
const ms = (affinity: unknown): ModelService => ({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'kimi', namespace: 'ml' }, spec: { affinity } as ModelService['spec'] });
const hostRewrite = [{ type: 'URLRewrite', urlRewrite: { hostname: 'gw.a.example.com' } }];
const pathRewrite = [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/v1' } } }];

describe('routeShape', () => {
  it.each([
    { name: 'backendRefs without filters collapse into one cluster', filters: undefined, shape: 'OneCluster' },
    { name: 'a per-backendRef hostname rewrite gives a cluster per backendRef', filters: hostRewrite, shape: 'ClusterPerBackendRef' },
    { name: 'a per-backendRef path rewrite is rejected by Envoy Gateway', filters: pathRewrite, shape: 'Rejected' },
  ])('$name', ({ filters, shape }) => expect(routeShape(route('r', {}, filters))).toBe(shape));
});

describe('routeShapeWarnings', () => {
  const nextEndpoint = { type: 'Session', sessionHeader: 'x-s', fallback: 'NextEndpoint' };
  it('selects routes by either label, in the same namespace only', () => {
    const routes = [route('composed', { 'crossplane.io/composite': 'kimi' }), route('hand', { 'affinity.modelplane.ai/model-service': 'kimi' }), route('other-ns', { 'crossplane.io/composite': 'kimi' }, undefined, 'x'), route('other', { 'crossplane.io/composite': 'qwen' })];
    expect(selectedRoutes(ms(nextEndpoint), routes).map((r) => r.metadata.name)).toEqual(['composed', 'hand']);
  });
  it('says NextEndpoint is limited on a route with per-backendRef filters', () => {
    const [warning] = routeShapeWarnings(ms(nextEndpoint), [route('r', { 'crossplane.io/composite': 'kimi' }, hostRewrite)]);
    expect(warning).toMatch(/^spec\.affinity\.fallback: NextEndpoint is limited on route ml\/r/);
  });
  it('says nothing for a one-cluster route, for fallback None, or for type None', () => {
    expect(routeShapeWarnings(ms(nextEndpoint), [route('r', { 'crossplane.io/composite': 'kimi' })])).toEqual([]);
    expect(routeShapeWarnings(ms({ ...nextEndpoint, fallback: 'None' }), [route('r', { 'crossplane.io/composite': 'kimi' }, hostRewrite)])).toEqual([]);
    expect(routeShapeWarnings(ms({ type: 'None' }), [route('r', { 'crossplane.io/composite': 'kimi' }, pathRewrite)])).toEqual([]);
  });
  it('warns that a per-backendRef path rewrite keeps the route from being served', () => {
    expect(routeShapeWarnings(ms(nextEndpoint), [route('r', { 'crossplane.io/composite': 'kimi' }, pathRewrite)])[0]).toMatch(/rejects/);
  });
});
