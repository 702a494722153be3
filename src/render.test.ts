// Golden files: testdata/render/<case>.in.yaml → <case>.out.yaml. A missing
// or different golden fails; regenerate with
// `UPDATE_GOLDEN=1 npx vitest run src/render.test.ts` and review the diff.
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { renderDocuments } from '../bin/render-command.ts';
import { modelService } from '../test/fixtures/model-service.ts';
import { formatFieldError } from './field-errors.ts';
import type { KubeObject, ModelService } from './model-service.ts';
import { crossNamespaceNames } from './naming.ts';
import { GENERATED_RESOURCES, MANIFEST_YAML_OPTIONS, crossNamespaceObjects, desiredObjects, gatewayHasherObjects, render, routeSelectors } from './render.ts';
import { formatModelFlag, parseModelFlag } from './gateway-hasher.ts';

const DIR = join(import.meta.dirname, 'testdata', 'render');
const IMAGE = 'ghcr.io/modelplane/modelplane-affinity:golden';
const cases = readdirSync(DIR).filter((f) => f.endsWith('.in.yaml')).map((f) => f.replace(/\.in\.yaml$/, '')).sort();

describe('render golden files', () => {
  it('has cases', () => expect(cases.length).toBeGreaterThanOrEqual(6));

  it.each(cases)('%s', (name) => {
    const text = readFileSync(join(DIR, `${name}.in.yaml`), 'utf8');
    const input = parse(text, { strict: true }) as ModelService;
    const result = render(input, { extProcImage: IMAGE });
    // One defaulted ModelService: `render -f` prints exactly the one in the golden (valid cases; an invalid one prints nothing).
    const printed = renderDocuments(text, IMAGE).yaml.split('---\n').filter(Boolean).map((d) => parse(d) as unknown);
    if (result.errors.length === 0) expect(printed).toEqual([result.modelService, ...result.objects]);
    const output = stringify(
      { warnings: result.warnings, errors: result.errors.map(formatFieldError), modelService: result.modelService, objects: result.objects },
      MANIFEST_YAML_OPTIONS,
    );
    // Objects share label maps in memory; printed manifests must spell them out.
    expect(output).not.toMatch(/[&*]a\d+\b/);
    const goldenFile = join(DIR, `${name}.out.yaml`);
    if (process.env.UPDATE_GOLDEN) writeFileSync(goldenFile, output);
    // A missing golden is a failure, not a pass that writes one: a new case must be reviewed like a changed one.
    if (!existsSync(goldenFile)) expect.fail(`${goldenFile} is missing: run UPDATE_GOLDEN=1 npx vitest run src/render.test.ts and review it`);
    expect(output).toBe(readFileSync(goldenFile, 'utf8'));
  });
});

describe('render', () => {
  const ms = (affinity: Record<string, unknown>) => modelService('m', affinity, { namespace: 'n' });

  it('adds health checks and a retry only for fallback NextEndpoint', () => {
    const [withFallback] = render(ms({ type: 'Session', sessionHeader: 'x-s' }), { extProcImage: IMAGE }).objects;
    const [without] = render(ms({ type: 'Session', sessionHeader: 'x-s', fallback: 'None' }), { extProcImage: IMAGE }).objects;
    expect(withFallback?.spec).toHaveProperty('healthCheck.passive');
    expect(withFallback?.spec).toHaveProperty('retry.retryOn.triggers', ['connect-failure', 'reset']);
    expect(without?.spec).not.toHaveProperty('healthCheck');
    expect(without?.spec).not.toHaveProperty('retry');
  });

  it('names every generated kind as kubectl and RBAC do', () => {
    expect(GENERATED_RESOURCES).toEqual([
      'services',
      'deployments.apps',
      'poddisruptionbudgets.policy',
      'envoyextensionpolicies.gateway.envoyproxy.io',
      'backendtrafficpolicies.gateway.envoyproxy.io',
    ]);
  });

  it('targets routes by the Crossplane composite label and by our own label', () => {
    expect(routeSelectors('m').map((s) => s.matchLabels)).toEqual([{ 'crossplane.io/composite': 'm' }, { 'affinity.modelplane.ai/model-service': 'm' }]);
  });

  it('renders nothing for an invalid spec', () => {
    expect(render(ms({ type: 'Session' }), { extProcImage: IMAGE }).objects).toEqual([]);
  });

  it('renders nothing for None', () => {
    expect(desiredObjects(ms({ type: 'None' }), { extProcImage: IMAGE })).toEqual([]);
  });

  it('runs the hasher with the configured prefixBytes', () => {
    const deployment = render(ms({ type: 'PrefixHash', prefixBytes: 777 }), { extProcImage: IMAGE }).objects.find((o) => o.kind === 'Deployment');
    expect(JSON.stringify(deployment)).toContain('"--prefix-bytes","777"');
  });
});

describe('crossNamespaceObjects (policies beside AIGatewayRoutes of other namespaces)', () => {
  const ms = (affinity: Record<string, unknown>) => modelService('kimi', affinity, { namespace: 'ml', uid: 'u-1' });
  const defaulted = (affinity: Record<string, unknown>) => render(ms(affinity), { extProcImage: IMAGE }).modelService;
  const targets = [
    { namespace: 'modelplane-system', httpRoutes: ['ml-kimi', 'ml-kimi-canary'] },
    { namespace: 'team-b', httpRoutes: ['kimi'] },
  ];
  const labels = { 'app.kubernetes.io/managed-by': 'modelplane-affinity', 'affinity.modelplane.ai/model-service': 'kimi', 'affinity.modelplane.ai/model-service-namespace': 'ml' };
  const { backendTrafficPolicy: btp } = crossNamespaceNames('ml', 'kimi');
  const where = (objects: KubeObject[]) => objects.map((o) => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`);

  it('PrefixHash: one BackendTrafficPolicy per namespace, targeting the HTTPRoutes by name, labelled for the ModelService; no hasher policy or grant (the Gateway hasher keys its requests)', () => {
    const objects = crossNamespaceObjects(defaulted({ type: 'PrefixHash' }), targets);
    expect(where(objects)).toEqual([`BackendTrafficPolicy modelplane-system/${btp}`, `BackendTrafficPolicy team-b/${btp}`]);
    const [policy] = objects as [KubeObject];
    // No ownerReference can cross namespaces: the labels name the ModelService.
    expect(policy.metadata).toEqual({ name: btp, namespace: 'modelplane-system', labels });
    expect(policy.spec).toMatchObject({
      targetRefs: [
        { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'ml-kimi' },
        { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'ml-kimi-canary' },
      ],
      loadBalancer: { type: 'ConsistentHash', consistentHash: { type: 'Headers', headers: [{ name: 'x-prompt-hash' }] } },
    });
    expect(policy.spec).not.toHaveProperty('targetSelectors');
  });

  it('the BackendTrafficPolicy elsewhere has the same load balancing and fallback as the one beside the ModelService', () => {
    const session = defaulted({ type: 'Session', sessionHeader: 'X-Session-ID' });
    const [away] = crossNamespaceObjects(session, targets.slice(0, 1));
    const [home] = desiredObjects(session, { extProcImage: IMAGE });
    const { targetRefs, ...awaySpec } = away?.spec as Record<string, unknown>;
    const { targetSelectors: _s, ...homeSpec } = home?.spec as Record<string, unknown>;
    expect(awaySpec).toEqual(homeSpec);
    expect(targetRefs).toHaveLength(2);
  });

  it.each([
    { name: 'Session: the BackendTrafficPolicy per namespace', affinity: { type: 'Session', sessionHeader: 'x-s' }, targets, kinds: ['BackendTrafficPolicy', 'BackendTrafficPolicy'] },
    { name: 'None: nothing', affinity: { type: 'None' }, targets, kinds: [] },
    { name: "a target in the ModelService's own namespace: nothing (the label selectors cover it)", affinity: { type: 'PrefixHash' }, targets: [{ namespace: 'ml', httpRoutes: ['kimi'] }], kinds: [] },
    { name: 'no target: nothing', affinity: { type: 'PrefixHash' }, targets: [], kinds: [] },
  ])('$name', ({ affinity, targets: t, kinds }) => {
    expect(crossNamespaceObjects(defaulted(affinity), t).map((o) => o.kind)).toEqual(kinds);
  });
});

describe('gatewayHasherObjects (the Gateway-level hasher, src/gateway-hasher.ts)', () => {
  const gateway = { namespace: 'modelplane-system', name: 'modelplane' };
  const models = [
    { model: 'team-b/qwen', prefixKey: 'Body' as const, prefixBytes: 512, modelService: 'team-b/qwen' },
    { model: 'ml/kimi', prefixKey: 'Conversation' as const, prefixBytes: 1024, modelService: 'ml/kimi' },
  ];
  const objects = gatewayHasherObjects(gateway, models, { extProcImage: IMAGE });
  const labels = { 'app.kubernetes.io/managed-by': 'modelplane-affinity', 'affinity.modelplane.ai/gateway': 'modelplane' };
  const byKind = (kind: string) => objects.find((o) => o.kind === kind) as KubeObject;

  it('writes the hasher Service, Deployment, PodDisruptionBudget and a Gateway-targeted EnvoyExtensionPolicy, all in the Gateway namespace, labelled for the Gateway, with no owner', () => {
    expect(objects.map((o) => `${o.kind} ${o.metadata.namespace}/${o.metadata.name}`)).toEqual([
      'Service modelplane-system/modelplane-gateway-prefix-hash',
      'Deployment modelplane-system/modelplane-gateway-prefix-hash',
      'PodDisruptionBudget modelplane-system/modelplane-gateway-prefix-hash',
      'EnvoyExtensionPolicy modelplane-system/modelplane-gateway-prefix-hash',
    ]);
    for (const o of objects) {
      expect(o.metadata.labels).toMatchObject(labels);
      expect(o.metadata).not.toHaveProperty('ownerReferences');
    }
    expect(byKind('EnvoyExtensionPolicy').spec).toMatchObject({
      targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'modelplane' }],
      extProc: [{ backendRefs: [{ group: '', kind: 'Service', name: 'modelplane-gateway-prefix-hash', port: 9002 }], processingMode: { request: { body: 'BufferedPartial' } }, failOpen: true }],
    });
  });

  it('gives the hasher one --model per model, sorted, in the format the ext-proc command parses', () => {
    const container = (byKind('Deployment').spec as { template: { spec: { containers: { args: string[] }[] } } }).template.spec.containers[0];
    expect(container?.args).toEqual(['ext-proc', '--port', '9002', '--model', 'ml/kimi=Conversation:1024', '--model', 'team-b/qwen=Body:512', '--metrics-port', '9090']);
    for (const m of models) expect(parseModelFlag(formatModelFlag(m), { min: 64, max: 32768 })).toEqual({ ok: true, settings: { model: m.model, prefixKey: m.prefixKey, prefixBytes: m.prefixBytes } });
  });

  it('has the same pod spec as a ModelService hasher but for its arguments and labels', () => {
    const own = desiredObjects(modelService('kimi', { type: 'PrefixHash', prefixBytes: 1024, prefixKey: 'Conversation' }), { extProcImage: IMAGE }).find((o) => o.kind === 'Deployment') as KubeObject;
    const podSpec = (d: KubeObject) => {
      const spec = structuredClone((d.spec as { template: { spec: Record<string, unknown> } }).template.spec) as { containers: { args?: string[] }[]; topologySpreadConstraints?: unknown };
      for (const c of spec.containers) delete c.args;
      delete spec.topologySpreadConstraints;
      return spec;
    };
    expect(podSpec(byKind('Deployment'))).toEqual(podSpec(own));
  });

  it('is nothing when no model needs it (so its objects are pruned)', () => {
    expect(gatewayHasherObjects(gateway, [], { extProcImage: IMAGE })).toEqual([]);
  });
});
