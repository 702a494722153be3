import { describe, expect, it } from 'vitest';
import type { Condition, KubeObject } from '../src/model-service.ts';
import { ENVOY_GATEWAY_API_VERSION, render } from '../src/render.ts';
import { modelService } from '../test/fixtures/model-service.ts';
import { type PlanCache, mustRecreate, plan, writeFailed } from './plan.ts';

const OPTIONS = { extProcImage: 'registry.example/mpa:test' };
const NOW = new Date('2026-01-02T03:04:05.678Z');
const UID = 'uid-kimi';
const SESSION = { type: 'Session', sessionHeader: 'X-Session-ID' };
const PREFIX = { type: 'PrefixHash' };
const owned = (affinity: unknown, status?: { conditions: Condition[] }) => modelService('kimi', affinity as never, { uid: UID, generation: 3, ...(status ? { status } : {}) });

/** What the reconciler would have applied for this affinity: the live objects of a converged ModelService. */
const rendered = (affinity: unknown) => render(owned(affinity), OPTIONS).objects;
const names = (objects: readonly KubeObject[]) => objects.map((o) => `${o.kind}/${o.metadata.name}`);

/** Caches holding `live` (our label) and `namesakes` (looked up: an object or null for none). */
function cacheOf(live: KubeObject[], namesakes: Record<string, KubeObject | null> = {}): PlanCache {
  const key = (kind: string, name: string) => `${kind}/${name}`;
  const byKey = new Map(live.map((o) => [key(o.kind, o.metadata.name ?? ''), o]));
  return {
    get: (kind, _namespace, name) => byKey.get(key(kind, name)) ?? namesakes[key(kind, name)],
    controlledBy: (uid) => live.filter((o) => o.metadata.ownerReferences?.some((r) => r.controller && r.uid === uid)),
  };
}
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
const NOTHING = { lookups: [] as string[], apply: [] as string[], prune: [] as string[], conflicts: [] as string[], reason: undefined as string | undefined, events: [] as string[], routes: [] as KubeObject[] };

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
      routes: [shapedRoute, { ...shapedRoute, metadata: { ...shapedRoute.metadata, namespace: 'elsewhere' } }],
      reason: 'FailoverLimited',
      events: ['Warning FailoverLimited'],
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
    const cache: PlanCache = { get: cacheOf(rendered(SESSION)).get, controlledBy: () => [theirs] };
    expect(plan(owned(SESSION), cache, [], OPTIONS, NOW).prune).toEqual([]);
  });

  it('writes the condition with the generation it saw, and moves lastTransitionTime only when the status flips', () => {
    const p = plan(owned(SESSION, converged('Applied', 'old message')), cacheOf(rendered(SESSION)), [], OPTIONS, NOW);
    expect(p.condition).toEqual({
      type: 'AffinityReady',
      status: 'True',
      reason: 'Applied',
      message: 'applied BackendTrafficPolicy kimi-affinity',
      observedGeneration: 3,
      lastTransitionTime: '2026-01-01T00:00:00Z',
    });
    const flipped = plan(owned({ type: 'Session' }, converged('Applied', 'old message')), cacheOf([]), [], OPTIONS, NOW);
    expect(flipped.condition).toMatchObject({ status: 'False', reason: 'InvalidSpec', lastTransitionTime: '2026-01-02T03:04:05Z' });
    expect(flipped.condition?.message).toContain('spec.affinity.sessionHeader: Required value');
  });

  it('names the objects held by someone else and how to fix it', () => {
    const p = plan(owned(SESSION), cacheOf([], { 'BackendTrafficPolicy/kimi-affinity': squatter }), [], OPTIONS, NOW);
    expect(p.condition?.message).toBe('BackendTrafficPolicy kimi-affinity already exist and are not controlled by this ModelService; rename or delete them (they are left untouched)');
  });
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
  ])('$name', ({ status, live, recreate }) => expect(mustRecreate({ status }, live, UID)).toBe(recreate));
});
