import { describe, expect, it } from 'vitest';
import type { Condition, KubeObject } from '../src/model-service.ts';
import { ENVOY_GATEWAY_API_VERSION, render } from '../src/render.ts';
import { modelService } from '../test/fixtures/model-service.ts';
import { crossNamespaceNames } from '../src/naming.ts';
import { crossNamespaceOwnerKey } from '../src/ownership.ts';
import type { RouteView } from '../src/route-shape.ts';
import { type PlanCache, finalizerPatch, mustRecreate, orphans, ownedBy, plan, writeFailed } from './plan.ts';

const OPTIONS = { extProcImage: 'registry.example/mpa:test' };
const NOW = new Date('2026-01-02T03:04:05.678Z');
const UID = 'uid-kimi';
const SESSION = { type: 'Session', sessionHeader: 'X-Session-ID' };
const PREFIX = { type: 'PrefixHash' };
const owned = (affinity: unknown, status?: { conditions: Condition[] }) => modelService('kimi', affinity as never, { uid: UID, generation: 3, ...(status ? { status } : {}) });

/** What the reconciler would have applied for this affinity: the live objects of a converged ModelService. */
const rendered = (affinity: unknown) => render(owned(affinity), OPTIONS).objects;
const names = (objects: readonly KubeObject[]) => objects.map((o) => `${o.kind}/${o.metadata.namespace === 'ml' ? '' : `${o.metadata.namespace}/`}${o.metadata.name}`);

/** Caches holding `live` (our label) and `namesakes` (looked up: an object or null for none), keyed `Kind/name` or `Kind/namespace/name`. */
function cacheOf(live: KubeObject[], namesakes: Record<string, KubeObject | null> = {}): PlanCache {
  const key = (kind: string, namespace: string, name: string) => (namespace === 'ml' ? `${kind}/${name}` : `${kind}/${namespace}/${name}`);
  const byKey = new Map(live.map((o) => [key(o.kind, o.metadata.namespace ?? 'ml', o.metadata.name ?? ''), o]));
  return {
    get: (kind, namespace, name) => byKey.get(key(kind, namespace, name)) ?? namesakes[key(kind, namespace, name)],
    controlledBy: (uid) => live.filter((o) => o.metadata.ownerReferences?.some((r) => r.controller && r.uid === uid)),
    labelledFor: (owner) => live.filter((o) => crossNamespaceOwnerKey(o) === owner),
  };
}

/** HTTPRoutes only, on a cluster without Envoy AI Gateway. */
const only = (httpRoutes: KubeObject[] = []): RouteView => ({ httpRoutes, aiGatewayRoutes: [] });
const noneExist = (affinity: unknown) => Object.fromEntries(names(rendered(affinity)).map((n) => [n, null]));

const converged = (reason: string, message: string): { conditions: Condition[] } => ({
  conditions: [{ type: 'AffinityReady', status: 'True', reason, message, observedGeneration: 3, lastTransitionTime: '2026-01-01T00:00:00Z' }],
});
const sessionApplied = converged('Applied', 'applied BackendTrafficPolicy kimi-affinity');

const squatter: KubeObject = { apiVersion: ENVOY_GATEWAY_API_VERSION, kind: 'BackendTrafficPolicy', metadata: { name: 'kimi-affinity', namespace: 'ml', uid: 'someone-else' }, spec: {} };
const shapedRoute: KubeObject = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name: 'r', namespace: 'ml', labels: { 'crossplane.io/composite': 'kimi' } },
  spec: { rules: [{ backendRefs: [{ name: 'a', port: 80, filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'gw.a.example.com' } }] }, { name: 'b', port: 80 }] }] },
};
const edited = (o: KubeObject): KubeObject => ({ ...o, spec: { ...(o.spec as object), loadBalancer: { type: 'RoundRobin' } } });

/** A row's expectations default to "writes nothing". */
const NOTHING = { lookups: [] as string[], apply: [] as string[], prune: [] as string[], conflicts: [] as string[], reason: undefined as string | undefined, events: [] as string[], routes: only() };

describe('plan', () => {
  it.each([
    {
      ...NOTHING,
      name: 'a new Session ModelService first asks whether a namesake of its policy exists',
      ms: owned(SESSION),
      cache: cacheOf([]),
      lookups: ['BackendTrafficPolicy/kimi-affinity'],
    },
    {
      ...NOTHING,
      name: 'with no namesake, it applies the policy and reports Applied with an Event',
      ms: owned(SESSION),
      cache: cacheOf([], noneExist(SESSION)),
      apply: ['BackendTrafficPolicy/kimi-affinity'],
      reason: 'Applied',
      events: ['Normal Applied'],
    },
    {
      ...NOTHING,
      name: 'a converged ModelService writes nothing at all',
      ms: owned(SESSION, sessionApplied),
      cache: cacheOf(rendered(SESSION)),
    },
    {
      ...NOTHING,
      name: 'a hand edit of a generated object is applied again, without a new condition',
      ms: owned(SESSION, sessionApplied),
      cache: cacheOf(rendered(SESSION).map(edited)),
      apply: ['BackendTrafficPolicy/kimi-affinity'],
    },
    {
      ...NOTHING,
      name: 'PrefixHash applies its five objects in order: Service before the policy that points at it',
      ms: owned(PREFIX),
      cache: cacheOf([], noneExist(PREFIX)),
      apply: ['Service/kimi-prefix-hash', 'Deployment/kimi-prefix-hash', 'PodDisruptionBudget/kimi-prefix-hash', 'EnvoyExtensionPolicy/kimi-prefix-hash', 'BackendTrafficPolicy/kimi-affinity'],
      reason: 'Applied',
      events: ['Normal Applied'],
    },
    {
      ...NOTHING,
      name: 'PrefixHash → Session prunes the four hasher objects and says so in an Event',
      ms: owned(SESSION, converged('Applied', 'applied the PrefixHash objects')),
      cache: cacheOf(rendered(PREFIX)),
      apply: ['BackendTrafficPolicy/kimi-affinity'],
      prune: ['Service/kimi-prefix-hash', 'Deployment/kimi-prefix-hash', 'PodDisruptionBudget/kimi-prefix-hash', 'EnvoyExtensionPolicy/kimi-prefix-hash'],
      reason: 'Applied',
      events: ['Normal Pruned', 'Normal Applied'],
    },
    {
      ...NOTHING,
      name: 'type None prunes everything and reports AffinityDisabled',
      ms: owned({ type: 'None' }),
      cache: cacheOf(rendered(SESSION)),
      prune: ['BackendTrafficPolicy/kimi-affinity'],
      reason: 'AffinityDisabled',
      events: ['Normal Pruned', 'Normal AffinityDisabled'],
    },
    {
      ...NOTHING,
      name: 'a namesake controlled by someone else is a conflict: left alone, the rest applied, nothing pruned',
      ms: owned(PREFIX),
      cache: cacheOf([...rendered(PREFIX).filter((o) => o.kind === 'Service')], { ...noneExist(PREFIX), 'BackendTrafficPolicy/kimi-affinity': squatter, 'Service/kimi-prefix-hash': undefined as never }),
      apply: ['Deployment/kimi-prefix-hash', 'PodDisruptionBudget/kimi-prefix-hash', 'EnvoyExtensionPolicy/kimi-prefix-hash'],
      conflicts: ['BackendTrafficPolicy kimi-affinity'],
      reason: 'ObjectConflict',
      events: ['Warning ObjectConflict'],
    },
    {
      ...NOTHING,
      name: 'an invalid spec (the webhook bypassed) keeps the existing objects and reports InvalidSpec',
      ms: owned({ type: 'Session', sessionHeader: 'Connection' }),
      cache: cacheOf(rendered(SESSION)),
      reason: 'InvalidSpec',
      events: ['Warning InvalidSpec'],
    },
    {
      ...NOTHING,
      name: 'a selected route with per-backendRef filters gives FailoverLimited and a Warning',
      ms: owned({ ...SESSION, fallback: 'NextEndpoint' }, sessionApplied),
      cache: cacheOf(rendered(SESSION)),
      routes: only([shapedRoute, { ...shapedRoute, metadata: { ...shapedRoute.metadata, namespace: 'elsewhere' } }]),
      reason: 'FailoverLimited',
      // The route's own Event, then the condition's.
      events: ['Warning FailoverLimited', 'Warning FailoverLimited'],
    },
    {
      ...NOTHING,
      name: 'a deleted ModelService (gone from the cache) does nothing: the garbage collector owns that',
      ms: undefined,
      cache: cacheOf(rendered(SESSION)),
    },
    {
      ...NOTHING,
      name: 'a ModelService being deleted does nothing either',
      ms: modelService('kimi', SESSION, { uid: UID, deletionTimestamp: '2026-01-01T00:00:00Z' }),
      cache: cacheOf([]),
    },
  ])('$name', ({ ms, cache, routes, lookups, apply, prune, conflicts, reason, events }) => {
    const p = plan(ms, cache, routes, OPTIONS, NOW);
    expect(names(p.lookups)).toEqual(lookups);
    expect(names(p.apply)).toEqual(apply);
    expect(names(p.prune)).toEqual(prune);
    expect(p.conflicts).toEqual(conflicts);
    expect(p.condition?.reason).toBe(reason);
    expect(p.events.map((e) => `${e.type} ${e.reason}`)).toEqual(events);
  });

  it('prunes only what this ModelService controls, by uid, never by name or label', () => {
    const theirs = { ...rendered(PREFIX)[0], metadata: { ...rendered(PREFIX)[0]?.metadata, ownerReferences: [{ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', name: 'kimi', uid: 'an-earlier-kimi', controller: true }] } } as KubeObject;
    const cache: PlanCache = { ...cacheOf(rendered(SESSION)), controlledBy: () => [theirs] };
    expect(plan(owned(SESSION), cache, only(), OPTIONS, NOW).prune).toEqual([]);
  });

  it('writes the condition with the generation it saw, and moves lastTransitionTime only when the status flips', () => {
    const p = plan(owned(SESSION, converged('Applied', 'old message')), cacheOf(rendered(SESSION)), only(), OPTIONS, NOW);
    expect(p.condition).toEqual({
      type: 'AffinityReady',
      status: 'True',
      reason: 'Applied',
      message: 'applied BackendTrafficPolicy kimi-affinity',
      observedGeneration: 3,
      lastTransitionTime: '2026-01-01T00:00:00Z',
    });
    const flipped = plan(owned({ type: 'Session' }, converged('Applied', 'old message')), cacheOf([]), only(), OPTIONS, NOW);
    expect(flipped.condition).toMatchObject({ status: 'False', reason: 'InvalidSpec', lastTransitionTime: '2026-01-02T03:04:05Z' });
    expect(flipped.condition?.message).toContain('spec.affinity.sessionHeader: Required value');
  });

  it('names the objects held by someone else and how to fix it', () => {
    const p = plan(owned(SESSION), cacheOf([], { 'BackendTrafficPolicy/kimi-affinity': squatter }), only(), OPTIONS, NOW);
    expect(p.condition?.message).toBe('BackendTrafficPolicy kimi-affinity already exist and are not controlled by this ModelService; rename or delete them (they are left untouched)');
  });
});

/** Envoy AI Gateway: an AIGatewayRoute in modelplane-system routes model ml/kimi (Modelplane's shape). */
describe('plan with AIGatewayRoutes', () => {
  const ROUTES_NS = 'modelplane-system';
  const away = crossNamespaceNames('ml', 'kimi');
  const modelRule = (model = 'ml/kimi') => ({ matches: [{ headers: [{ type: 'Exact', name: 'x-ai-eg-model', value: model }] }], backendRefs: [{ name: 'a' }, { name: 'b', priority: 1 }] });
  const poolRule = { matches: [{ headers: [{ name: 'x-ai-eg-model', value: 'ml/kimi' }] }], backendRefs: [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'kimi-pool' }] };
  const aiRoute = (name: string, rules: unknown[], namespace = ROUTES_NS, labels?: Record<string, string>): KubeObject => ({
    apiVersion: 'aigateway.envoyproxy.io/v1beta1',
    kind: 'AIGatewayRoute',
    metadata: { name, namespace, ...(labels ? { labels } : {}) },
    spec: { rules },
  });
  const generated = (name: string, rules: unknown[]): KubeObject => ({
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: 'ml', labels: { 'affinity.modelplane.ai/model-service': 'kimi' }, annotations: { 'gateway.envoyproxy.io/ai-gateway-generated': 'true' } },
    spec: { rules: [...rules, { matches: [{ path: { type: 'PathPrefix', value: '/' } }], filters: [{ type: 'ExtensionRef' }] }] },
  });
  const ai = (...aiGatewayRoutes: KubeObject[]): RouteView => ({ httpRoutes: [], aiGatewayRoutes });
  const route = aiRoute('ml-kimi', [modelRule()]);
  const withFinalizer = (ms: ReturnType<typeof owned>) => ({ ...ms, metadata: { ...ms.metadata, finalizers: ['affinity.modelplane.ai/cleanup'] } });
  /** The live objects after a converged pass with this route. */
  const convergedWith = (affinity: unknown, routes: RouteView) => {
    const ms = owned(affinity);
    const first = plan(ms, cacheOf([], Object.fromEntries(names(plan(ms, cacheOf([]), routes, OPTIONS, NOW).lookups).map((n) => [n, null]))), routes, OPTIONS, NOW);
    return first.desired;
  };
  const sessionAway = `BackendTrafficPolicy/${ROUTES_NS}/${away.backendTrafficPolicy}`;
  const FINAL = { ...NOTHING, finalizer: undefined as string | undefined };

  it.each([
    {
      ...FINAL,
      name: 'a route in another namespace: the policy there is looked up first, like every first write',
      ms: owned(SESSION),
      cache: cacheOf([]),
      routes: ai(route),
      lookups: ['BackendTrafficPolicy/kimi-affinity', sessionAway],
    },
    {
      ...FINAL,
      name: 'Session: a BackendTrafficPolicy in the route namespace too, after the finalizer that will clean it up',
      ms: owned(SESSION),
      cache: cacheOf([], { 'BackendTrafficPolicy/kimi-affinity': null, [sessionAway]: null }),
      routes: ai(route),
      apply: ['BackendTrafficPolicy/kimi-affinity', sessionAway],
      finalizer: 'add',
      reason: 'Applied',
      events: ['Normal RouteAttached', 'Normal Applied'],
    },
    {
      ...FINAL,
      name: 'PrefixHash: only the BackendTrafficPolicy in the route namespace (the Gateway hasher keys the requests: gateway-plan.ts); the hasher of its own stays for routes of its namespace',
      ms: owned(PREFIX),
      cache: cacheOf([], Object.fromEntries([...names(rendered(PREFIX)), sessionAway].map((n) => [n, null]))),
      routes: ai(route),
      apply: ['Service/kimi-prefix-hash', 'Deployment/kimi-prefix-hash', 'PodDisruptionBudget/kimi-prefix-hash', 'EnvoyExtensionPolicy/kimi-prefix-hash', 'BackendTrafficPolicy/kimi-affinity', sessionAway],
      finalizer: 'add',
      reason: 'Applied',
      events: ['Normal RouteAttached', 'Normal Applied'],
    },
    {
      ...FINAL,
      name: 'converged, finalizer held: nothing to write',
      ms: withFinalizer(owned(SESSION, converged('Applied', `applied BackendTrafficPolicy kimi-affinity, BackendTrafficPolicy ${ROUTES_NS}/${away.backendTrafficPolicy}; routes: AIGatewayRoute ${ROUTES_NS}/ml-kimi`))),
      cache: cacheOf(convergedWith(SESSION, ai(route))),
      routes: ai(route),
    },
    {
      ...FINAL,
      name: 'type None: the objects in other namespaces are pruned by their labels, then the finalizer goes',
      ms: withFinalizer(owned({ type: 'None' })),
      cache: cacheOf(convergedWith(PREFIX, ai(route))),
      routes: ai(route),
      prune: ['Service/kimi-prefix-hash', 'Deployment/kimi-prefix-hash', 'PodDisruptionBudget/kimi-prefix-hash', 'EnvoyExtensionPolicy/kimi-prefix-hash', 'BackendTrafficPolicy/kimi-affinity', sessionAway],
      finalizer: 'remove',
      reason: 'AffinityDisabled',
      events: ['Normal Pruned', 'Normal AffinityDisabled'],
    },
    {
      ...FINAL,
      name: 'the AIGatewayRoute deleted: its policy is pruned, the finalizer goes, the rest stays',
      ms: withFinalizer(owned(SESSION, sessionApplied)),
      cache: cacheOf(convergedWith(SESSION, ai(route))),
      routes: ai(),
      prune: [sessionAway],
      finalizer: 'remove',
      events: ['Normal Pruned'],
    },
    {
      ...FINAL,
      name: 'AIGatewayRoutes not known yet: the objects in other namespaces are kept as they are, and the message says why',
      ms: withFinalizer(owned(SESSION, sessionApplied)),
      cache: cacheOf(convergedWith(SESSION, ai(route))),
      routes: { httpRoutes: [], aiGatewayRoutes: undefined },
      reason: 'Applied',
      events: ['Warning Applied'],
    },
    {
      ...FINAL,
      name: 'a ModelService being deleted with its finalizer: only the objects in other namespaces are deleted, then the finalizer',
      ms: withFinalizer(modelService('kimi', SESSION, { uid: UID, deletionTimestamp: '2026-01-01T00:00:00Z' })),
      cache: cacheOf(convergedWith(SESSION, ai(route))),
      routes: ai(route),
      prune: [sessionAway],
      finalizer: 'remove',
      events: ['Normal Pruned'],
    },
    {
      ...FINAL,
      name: "a namesake in the route namespace without our labels is someone else's: a conflict",
      ms: owned(SESSION),
      cache: cacheOf([], { 'BackendTrafficPolicy/kimi-affinity': null, [sessionAway]: { ...squatter, metadata: { name: away.backendTrafficPolicy, namespace: ROUTES_NS } } }),
      routes: ai(route),
      apply: ['BackendTrafficPolicy/kimi-affinity'],
      conflicts: [`BackendTrafficPolicy ${ROUTES_NS}/${away.backendTrafficPolicy}`],
      finalizer: 'add',
      reason: 'ObjectConflict',
      events: ['Warning ObjectConflict'],
    },
    {
      ...FINAL,
      name: 'the HTTPRoute AI Gateway generated in the same namespace (labels copied): selected by the label, one Event for it',
      ms: owned(SESSION, sessionApplied),
      cache: cacheOf(rendered(SESSION)),
      routes: { httpRoutes: [generated('kimi', [modelRule()])], aiGatewayRoutes: [aiRoute('kimi', [modelRule()], 'ml', { 'affinity.modelplane.ai/model-service': 'kimi' })] },
      reason: 'Applied',
      events: ['Normal RouteAttached', 'Normal Applied'],
    },
    {
      ...FINAL,
      name: 'a generated HTTPRoute with a rule to an InferencePool (read from the HTTPRoute; AI Gateway not watched)',
      ms: owned(SESSION, sessionApplied),
      cache: cacheOf(rendered(SESSION)),
      routes: only([generated('kimi', [modelRule(), poolRule])]),
      reason: 'InferencePoolBackend',
      events: ['Normal RouteAttached', 'Warning InferencePoolBackend', 'Warning InferencePoolBackend'],
    },
  ])('$name', ({ ms, cache, routes, lookups, apply, prune, conflicts, reason, events, finalizer }) => {
    const p = plan(ms, cache, routes, OPTIONS, NOW);
    expect(names(p.lookups)).toEqual(lookups);
    expect(names(p.apply)).toEqual(apply);
    expect(names(p.prune)).toEqual(prune);
    expect(p.conflicts).toEqual(conflicts);
    expect(p.finalizer).toBe(finalizer);
    expect(p.condition?.reason).toBe(reason);
    expect(p.events.map((e) => `${e.type} ${e.reason}`)).toEqual(events);
  });

  it.each([
    ['a route of only InferencePool rules: nothing attached to it, and the condition says why', ai(aiRoute('ml-kimi', [poolRule])), 'InferencePoolBackend'],
    ['an AIGatewayRoute that routes other models too: not attached (its HTTPRoute would hash them as well)', ai(aiRoute('shared', [modelRule(), modelRule('ml/qwen')])), 'RouteShared'],
    ['an AIGatewayRoute of the same namespace without our label: reported, with the label to add', ai(aiRoute('kimi', [modelRule()], 'ml')), 'RouteNotSelected'],
  ])('%s', (_name, routes, reason) => {
    const p = plan(owned(SESSION, sessionApplied), cacheOf(rendered(SESSION)), routes, OPTIONS, NOW);
    expect([...p.lookups, ...p.apply, ...p.prune]).toEqual([]);
    expect(p.finalizer).toBeUndefined();
    expect(p.condition?.reason).toBe(reason);
    // The route's own Event, then the condition's.
    expect(p.events.map((e) => `${e.type} ${e.reason}`)).toEqual([`Warning ${reason}`, `Warning ${reason}`]);
  });

  it('says where an InferencePool rule is, why affinity cannot apply there, and who chooses instead', () => {
    const p = plan(owned(SESSION), cacheOf(rendered(SESSION), { [sessionAway]: null }), ai(aiRoute('ml-kimi', [modelRule(), poolRule])), OPTIONS, NOW);
    expect(p.events.find((e) => e.reason === 'InferencePoolBackend')?.message).toBe(
      `rule 1 of AIGatewayRoute ${ROUTES_NS}/ml-kimi routes to InferencePool kimi-pool: AI Gateway makes its cluster ORIGINAL_DST and routes to the endpoint ` +
        'its endpoint picker names, replacing the load-balancing policy, so cluster affinity cannot apply there; the endpoint picker chooses the replica',
    );
    // Rule 0 still gets the policies in the route's namespace.
    expect(names(p.apply)).toContain(sessionAway);
  });

  it('names the routes found and the objects elsewhere with their namespace in the condition message', () => {
    const p = plan(owned(SESSION), cacheOf([], { 'BackendTrafficPolicy/kimi-affinity': null, [sessionAway]: null }), ai(route), OPTIONS, NOW);
    expect(p.condition?.message).toBe(`applied BackendTrafficPolicy kimi-affinity, BackendTrafficPolicy ${ROUTES_NS}/${away.backendTrafficPolicy}; routes: AIGatewayRoute ${ROUTES_NS}/ml-kimi`);
    expect(p.events[0]?.message).toBe(
      `AIGatewayRoute ${ROUTES_NS}/ml-kimi routes x-ai-eg-model ml/kimi: the BackendTrafficPolicy in namespace ${ROUTES_NS} targets its HTTPRoute ${ROUTES_NS}/ml-kimi by name; ` +
        "each rule's backends are one Envoy cluster (Maglev; backend priorities keep priority failover)",
    );
  });

  it('a deleted ModelService leaves orphans only in other namespaces, found by its labels', () => {
    const live = convergedWith(PREFIX, ai(route));
    expect(names(orphans(cacheOf(live), 'ml', 'kimi'))).toEqual([sessionAway]);
    expect(orphans(cacheOf(live), 'ml', 'qwen')).toEqual([]);
  });
});

describe('finalizerPatch', () => {
  const ms = (finalizers?: string[]) => ({ ...owned(SESSION), metadata: { ...owned(SESSION).metadata, ...(finalizers ? { finalizers } : {}) } });
  const uid = { op: 'test', path: '/metadata/uid', value: UID };
  it.each([
    { name: 'adds the list when there is none', ms: ms(), change: 'add' as const, patch: [uid, { op: 'add', path: '/metadata/finalizers', value: ['affinity.modelplane.ai/cleanup'] }] },
    { name: "appends to someone else's list", ms: ms(['other']), change: 'add' as const, patch: [uid, { op: 'add', path: '/metadata/finalizers/-', value: 'affinity.modelplane.ai/cleanup' }] },
    { name: 'adds nothing when it is there', ms: ms(['affinity.modelplane.ai/cleanup']), change: 'add' as const, patch: undefined },
    {
      name: 'removes ours where it is, testing it is still there',
      ms: ms(['other', 'affinity.modelplane.ai/cleanup']),
      change: 'remove' as const,
      patch: [uid, { op: 'test', path: '/metadata/finalizers/1', value: 'affinity.modelplane.ai/cleanup' }, { op: 'remove', path: '/metadata/finalizers/1' }],
    },
    { name: 'removes nothing when it is not there', ms: ms(['other']), change: 'remove' as const, patch: undefined },
  ])('$name', ({ ms: input, change, patch }) => expect(finalizerPatch(input, change)).toEqual(patch));
});

describe('writeFailed', () => {
  const [policy] = rendered(SESSION);
  it.each([
    { name: 'a 404 writing an Envoy Gateway kind means its CRDs are missing', status: 404, object: policy, reason: 'GatewayCRDsMissing', says: 'install Envoy Gateway >= v1.9.0' },
    { name: 'any other refusal is ApplyFailed with the API error', status: 422, object: policy, reason: 'ApplyFailed', says: 'the API said no' },
    { name: 'a 404 while pruning (no object being written) is ApplyFailed too', status: 404, object: undefined, reason: 'ApplyFailed', says: 'the API said no' },
  ])('$name', ({ status, object, reason, says }) => {
    const outcome = writeFailed(owned(SESSION), object, { status, message: 'the API said no' }, ENVOY_GATEWAY_API_VERSION, NOW);
    expect(outcome.condition).toMatchObject({ status: 'False', reason });
    expect(outcome.condition?.message).toContain(says);
    expect(outcome.events).toEqual([{ type: 'Warning', reason, message: outcome.condition?.message }]);
  });
});

describe('mustRecreate', () => {
  const [ours] = rendered(SESSION);
  it.each([
    { name: 'an apply of our object refused as invalid (a field another manager owns): recreate it', status: 422, live: ours, recreate: true },
    { name: "someone else's object is never deleted", status: 422, live: squatter, recreate: false },
    { name: 'an object that does not exist is not recreated', status: 422, live: null, recreate: false },
    { name: 'other refusals are retried, not recreated', status: 409, live: ours, recreate: false },
    {
      name: 'its policy beside an AIGatewayRoute of another namespace (labelled, no owner): recreate it',
      status: 422,
      live: { ...squatter, metadata: { name: 'p', namespace: 'modelplane-system', labels: { 'app.kubernetes.io/managed-by': 'modelplane-affinity', 'affinity.modelplane.ai/model-service': 'kimi', 'affinity.modelplane.ai/model-service-namespace': 'ml' } } },
      recreate: true,
    },
    {
      name: "another ModelService's policy there is never deleted",
      status: 422,
      live: { ...squatter, metadata: { name: 'p', namespace: 'modelplane-system', labels: { 'app.kubernetes.io/managed-by': 'modelplane-affinity', 'affinity.modelplane.ai/model-service': 'qwen', 'affinity.modelplane.ai/model-service-namespace': 'ml' } } },
      recreate: false,
    },
  ])('$name', ({ status, live, recreate }) => expect(mustRecreate({ status }, live, ownedBy(owned(SESSION)))).toBe(recreate));
});
