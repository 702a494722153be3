import { describe, expect, it } from 'vitest';
import type { KubeObject, ModelService } from './model-service.ts';
import { discoverRoutes, routeShape, routeShapeWarnings, selectedRoutes } from './route-shape.ts';

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

describe('discoverRoutes', () => {
  const aiRoute = (name: string, namespace: string, models: string[]): KubeObject => ({
    apiVersion: 'aigateway.envoyproxy.io/v1beta1',
    kind: 'AIGatewayRoute',
    metadata: { name, namespace },
    spec: { rules: models.map((value) => ({ matches: [{ headers: [{ name: 'x-ai-eg-model', value }] }], backendRefs: [{ name: 'b' }] })) },
  });
  const session = ms({ type: 'Session', sessionHeader: 'x-s', fallback: 'NextEndpoint' });

  it('targets every route of the model in other namespaces, grouped by namespace and sorted', () => {
    const view = { httpRoutes: [], aiGatewayRoutes: [aiRoute('z', 'gw', ['ml/kimi']), aiRoute('a', 'gw', ['ml/kimi', 'ml/kimi']), aiRoute('k', 'b-team', ['ml/kimi']), aiRoute('q', 'gw', ['ml/qwen'])] };
    const found = discoverRoutes(session, view);
    expect(found.targets).toEqual([
      { namespace: 'b-team', httpRoutes: ['k'] },
      { namespace: 'gw', httpRoutes: ['a', 'z'] },
    ]);
    expect(found.findings.map((f) => `${f.level} ${f.route}`)).toEqual(['attached AIGatewayRoute b-team/k', 'attached AIGatewayRoute gw/a', 'attached AIGatewayRoute gw/z']);
    expect(found.complete).toBe(true);
  });

  it('does not decide what belongs elsewhere while AIGatewayRoutes are unknown, and finds nothing for type None', () => {
    expect(discoverRoutes(session, { httpRoutes: [], aiGatewayRoutes: undefined })).toEqual({ findings: [], gatewayModels: [], targets: [], complete: false });
    expect(discoverRoutes(ms({ type: 'None' }), { httpRoutes: [], aiGatewayRoutes: undefined })).toEqual({ findings: [], gatewayModels: [], targets: [], complete: true });
  });

  it('reports a route of its own namespace that does not carry the label, and names the label to add', () => {
    const [finding] = discoverRoutes(session, { httpRoutes: [], aiGatewayRoutes: [aiRoute('kimi', 'ml', ['ml/kimi'])] }).findings;
    expect(finding).toMatchObject({ route: 'AIGatewayRoute ml/kimi', level: 'notApplied', reason: 'RouteNotSelected' });
    expect(finding?.message).toContain('add the label to the AIGatewayRoute');
  });

  it('says which rules of a shared route carry other traffic', () => {
    const [finding] = discoverRoutes(session, { httpRoutes: [], aiGatewayRoutes: [aiRoute('all', 'gw', ['ml/qwen', 'ml/kimi', 'ml/glm'])] }).findings;
    expect(finding?.message).toBe(
      'AIGatewayRoute gw/all routes x-ai-eg-model ml/kimi, but its rules 0, 2 route other traffic: a policy on its HTTPRoute would hash that traffic too, ' +
        'so nothing is attached to it; route ml/kimi in an AIGatewayRoute of its own',
    );
  });
});
