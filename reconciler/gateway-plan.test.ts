import { describe, expect, it } from 'vitest';
import type { KubeObject } from '../src/model-service.ts';
import { GATEWAY_HASHER_INDEX, ownerIndexKey } from '../src/ownership.ts';
import { gatewayHasherObjects } from '../src/render.ts';
import type { RouteView } from '../src/route-shape.ts';
import { modelService } from '../test/fixtures/model-service.ts';
import { gatewayHashers, planGatewayHashers } from './gateway-plan.ts';
import type { PlanCache } from './plan.ts';

const OPTIONS = { extProcImage: 'registry.example/mpa:test' };
const GW = { namespace: 'modelplane-system', name: 'modelplane' };
const OTHER_GW = { namespace: 'edge', name: 'public' };

/** Modelplane's shape: one AIGatewayRoute per ModelService in modelplane-system, on these Gateways. */
const aiRoute = (model: string, parentRefs: unknown[] = [{ name: GW.name }], namespace = GW.namespace): KubeObject => ({
  apiVersion: 'aigateway.envoyproxy.io/v1beta1',
  kind: 'AIGatewayRoute',
  metadata: { name: model.replace('/', '-'), namespace },
  spec: { parentRefs, rules: [{ matches: [{ headers: [{ type: 'Exact', name: 'x-ai-eg-model', value: model }] }], backendRefs: [{ name: 'a' }] }] },
});
/** The HTTPRoute AI Gateway generates from a labelled AIGatewayRoute of the ModelService's namespace. */
const generated = (name: string, namespace: string, models: string[], parentRefs: unknown[]): KubeObject => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace, labels: { 'affinity.modelplane.ai/model-service': name }, annotations: { 'gateway.envoyproxy.io/ai-gateway-generated': 'true' } },
  spec: { parentRefs, rules: models.map((value) => ({ matches: [{ headers: [{ name: 'x-ai-eg-model', value }] }], backendRefs: [{ name: 'b' }] })) },
});
const view = (aiGatewayRoutes: KubeObject[] | undefined, httpRoutes: KubeObject[] = []): RouteView => ({ httpRoutes, aiGatewayRoutes });

const kimi = modelService('kimi', { type: 'PrefixHash' }, { namespace: 'ml', uid: 'u-kimi' });
const qwen = modelService('qwen', { type: 'PrefixHash', prefixKey: 'Body', prefixBytes: 512 }, { namespace: 'team-b', uid: 'u-qwen' });
const glm = modelService('glm', { type: 'Session', sessionHeader: 'X-Session-ID' }, { namespace: 'ml', uid: 'u-glm' });
const routes = view([aiRoute('ml/kimi'), aiRoute('team-b/qwen'), aiRoute('ml/glm')]);

const desiredFor = (models: { model: string; prefixKey: 'Conversation' | 'Body'; prefixBytes: number; modelService: string }[], gateway = GW) => gatewayHasherObjects(gateway, models, OPTIONS);
const KIMI = { model: 'ml/kimi', prefixKey: 'Conversation' as const, prefixBytes: 1024, modelService: 'ml/kimi' };
const QWEN = { model: 'team-b/qwen', prefixKey: 'Body' as const, prefixBytes: 512, modelService: 'team-b/qwen' };

/** Caches holding `live`, every other name known not to exist unless listed in `namesakes` (`Kind/namespace/name`). */
function cacheOf(live: KubeObject[], namesakes: Record<string, KubeObject | null | undefined> = {}, unknownByDefault = false): PlanCache {
  const key = (kind: string, namespace: string, name: string) => `${kind}/${namespace}/${name}`;
  const byKey = new Map(live.map((o) => [key(o.kind, o.metadata.namespace ?? '', o.metadata.name ?? ''), o]));
  return {
    get: (kind, namespace, name) => {
      const k = key(kind, namespace, name);
      if (byKey.has(k)) return byKey.get(k);
      if (k in namesakes) return namesakes[k];
      return unknownByDefault ? undefined : null;
    },
    controlledBy: () => [],
    labelledFor: (index) => live.filter((o) => ownerIndexKey(o) === index),
  };
}
const where = (objects: readonly KubeObject[]) => objects.map((o) => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`);
const argsOf = (objects: readonly KubeObject[]) =>
  (objects.find((o) => o.kind === 'Deployment')?.spec as { template: { spec: { containers: { args: string[] }[] } } } | undefined)?.template.spec.containers[0]?.args.filter((a) => a.includes('='));

describe('gatewayHashers: the models each Gateway hasher keys', () => {
  it.each([
    { name: "Modelplane's shape: each PrefixHash ModelService's model with its defaulted settings; Session models are not keyed", ms: [qwen, glm, kimi], routes, expected: [{ gateway: GW, models: [KIMI, QWEN] }] },
    { name: 'AIGatewayRoutes not known yet: undefined (nothing decided)', ms: [kimi], routes: view(undefined), expected: undefined },
    { name: 'no AIGatewayRoute for the model: no hasher', ms: [kimi], routes: view([aiRoute('team-b/qwen')]), expected: [] },
    {
      name: 'no AI Gateway route at all (a cluster without Envoy AI Gateway, plain HTTPRoutes only): no hasher',
      ms: [kimi, qwen],
      routes: view([], [{ ...generated('kimi', 'ml', ['ml/kimi'], [{ name: 'gw' }]), metadata: { name: 'kimi', namespace: 'ml', labels: { 'affinity.modelplane.ai/model-service': 'kimi' } } }]),
      expected: [],
    },
    {
      name: 'a route on two Gateways (one in another namespace, parentRef namespace given): a hasher on each',
      ms: [kimi],
      routes: view([aiRoute('ml/kimi', [{ name: GW.name }, { name: OTHER_GW.name, namespace: OTHER_GW.namespace }])]),
      expected: [
        { gateway: OTHER_GW, models: [KIMI] },
        { gateway: GW, models: [KIMI] },
      ],
    },
    { name: 'a parentRef that is not a Gateway is ignored', ms: [kimi], routes: view([aiRoute('ml/kimi', [{ kind: 'Service', group: '', name: 'x' }])]), expected: [] },
    {
      name: 'the same-namespace labelled shape: the generated HTTPRoute names the Gateway and the models of its rules',
      ms: [kimi],
      routes: view([], [generated('kimi', 'ml', ['kimi-large', 'kimi-small'], [{ name: 'inner' }])]),
      expected: [
        {
          gateway: { namespace: 'ml', name: 'inner' },
          models: [
            { ...KIMI, model: 'kimi-large' },
            { ...KIMI, model: 'kimi-small' },
          ],
        },
      ],
    },
    { name: 'a ModelService being deleted contributes nothing', ms: [modelService('kimi', { type: 'PrefixHash' }, { namespace: 'ml', uid: 'u', deletionTimestamp: '2026-01-01T00:00:00Z' })], routes, expected: [] },
    { name: 'an invalid spec contributes nothing', ms: [modelService('kimi', { type: 'PrefixHash', prefixBytes: 1 }, { namespace: 'ml', uid: 'u' })], routes, expected: [] },
  ])('$name', ({ ms, routes: r, expected }) => {
    expect(gatewayHashers(ms, r)).toEqual(expected);
  });

  it('a model two ModelServices claim keeps the first by namespace/name', () => {
    const labelled = (ns: string, settings: Record<string, unknown>) => modelService('m', { type: 'PrefixHash', ...settings }, { namespace: ns, uid: ns });
    const shared = (ns: string) => generated('m', ns, ['same-model'], [{ name: 'gw', namespace: 'gws' }]);
    const found = gatewayHashers([labelled('b', { prefixBytes: 256 }), labelled('a', { prefixBytes: 2048 })], view([], [shared('a'), shared('b')]));
    expect(found?.[0]?.models).toEqual([{ model: 'same-model', prefixKey: 'Conversation', prefixBytes: 2048, modelService: 'a/m' }]);
  });
});

describe('planGatewayHashers', () => {
  const both = desiredFor([KIMI, QWEN]);
  it.each([
    { name: 'first pass: every name is looked up before the first write', cache: cacheOf([], {}, true), routes, lookups: where(both), apply: [], prune: [], conflicts: [] },
    { name: 'nothing there: the four objects are applied, Service first', cache: cacheOf([]), routes, lookups: [], apply: where(both), prune: [], conflicts: [] },
    { name: 'converged: nothing to write', cache: cacheOf(both), routes, lookups: [], apply: [], prune: [], conflicts: [] },
    {
      name: 'a model added: only the Deployment changes (its --model flags)',
      cache: cacheOf(desiredFor([KIMI])),
      routes,
      lookups: [],
      apply: ['Deployment modelplane-system/modelplane-gateway-prefix-hash'],
      prune: [],
      conflicts: [],
    },
    { name: 'the last PrefixHash route gone: the hasher is pruned', cache: cacheOf(both), routes: view([aiRoute('ml/glm')]), lookups: [], apply: [], prune: where(both), conflicts: [] },
    { name: 'every AI Gateway route gone: the hasher is pruned', cache: cacheOf(both), routes: view([]), lookups: [], apply: [], prune: where(both), conflicts: [] },
    { name: 'AIGatewayRoutes not known: the hashers are left as they are', cache: cacheOf(both), routes: view(undefined), lookups: [], apply: [], prune: [], conflicts: [] },
    {
      name: "a namesake Service without our Gateway label is someone else's: left alone, reported",
      cache: cacheOf([], { 'Service/modelplane-system/modelplane-gateway-prefix-hash': { apiVersion: 'v1', kind: 'Service', metadata: { name: 'modelplane-gateway-prefix-hash', namespace: 'modelplane-system' } } }),
      routes,
      lookups: [],
      apply: where(both).filter((w) => !w.startsWith('Service ')),
      prune: [],
      conflicts: ['Service modelplane-system/modelplane-gateway-prefix-hash'],
    },
  ])('$name', ({ cache, routes: r, lookups, apply, prune, conflicts }) => {
    const p = planGatewayHashers([kimi, qwen, glm], cache, r, OPTIONS);
    expect({ lookups: where(p.lookups), apply: where(p.apply), prune: where(p.prune), conflicts: p.conflicts }).toEqual({ lookups, apply, prune, conflicts });
  });

  it('the Deployment carries each model\'s settings', () => {
    expect(argsOf(planGatewayHashers([kimi, qwen], cacheOf([]), routes, OPTIONS).apply)).toEqual(['ml/kimi=Conversation:1024', 'team-b/qwen=Body:512']);
  });

  it('the caches file the hasher objects under GATEWAY_HASHER_INDEX, not under any ModelService', () => {
    expect(both.map(ownerIndexKey)).toEqual(both.map(() => GATEWAY_HASHER_INDEX));
  });
});
