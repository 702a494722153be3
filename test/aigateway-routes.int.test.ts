// Issue 16, the control-plane side, on the real test bed with Envoy AI
// Gateway's CRDs (from its module zip; neither its controller nor Envoy
// Gateway's runs here, the data-plane tests own those): a ModelService whose
// model an AIGatewayRoute of another namespace routes (Modelplane's shape)
// gets its BackendTrafficPolicy in that namespace, targeting the generated
// HTTPRoute by name, and, for PrefixHash, its model in the hasher of the
// route's Gateway (src/gateway-hasher.ts) in the Gateway's namespace; they are
// pruned when affinity is set to None and cleaned up, through the finalizer,
// when the ModelService is deleted. A rule to an InferencePool is reported
// with where and why.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { KubeObject } from '../src/model-service.ts';
import { crossNamespaceNames } from '../src/naming.ts';
import { modelService } from './fixtures/model-service.ts';
import { aiGatewayCrdFiles, installCrds } from './testbed/crds.ts';
import { type ManagedProcess, freePort, readyz, startProcess, waitFor } from './testbed/processes.ts';
import { type Testbed, createNamespace, testbed } from './testbed/testbed.ts';
import { CLI } from './testbed/webhook.ts';

const IMAGE = 'registry.example/modelplane-affinity:test';
const FINALIZER = 'affinity.modelplane.ai/cleanup';
let tb: Testbed;
/** Where the ModelServices live, and where the AIGatewayRoutes do (modelplane-system in Modelplane). */
let msNs: string;
let routeNs: string;
let healthPort: number;
let reconciler: ManagedProcess;

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}
type Live = KubeObject & { spec?: Record<string, any>; status?: { conditions?: Condition[] } };

async function getJson(resource: string, name: string, namespace: string): Promise<Live | undefined> {
  const r = await tb.kubectl(['get', resource, name, '-n', namespace, '-o', 'json']);
  return r.code === 0 ? (JSON.parse(r.stdout) as Live) : undefined;
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  await waitFor(what, check, timeoutMs, () => reconciler.tail(30));
}

const apply = (object: unknown) => tb.kubectlOk(['apply', '-f', '-'], { input: stringify(object) });

/** An AIGatewayRoute as Modelplane renders one per ModelService: one rule, x-ai-eg-model `<ns>/<name>`, weighted and prioritised backends. */
function aiGatewayRoute(name: string, model: string, backendRefs: unknown[] = [{ name: 'cluster-a', weight: 1 }, { name: 'cluster-b', weight: 1, priority: 1 }]) {
  return {
    apiVersion: 'aigateway.envoyproxy.io/v1beta1',
    kind: 'AIGatewayRoute',
    metadata: { name, namespace: routeNs },
    spec: {
      parentRefs: [{ name: 'modelplane', kind: 'Gateway', group: 'gateway.networking.k8s.io' }],
      rules: [{ matches: [{ headers: [{ type: 'Exact', name: 'x-ai-eg-model', value: model }] }], backendRefs }],
    },
  };
}

const affinityReady = async (name: string) => (await getJson('modelservice', name, msNs))?.status?.conditions?.find((c) => c.type === 'AffinityReady');
const finalizers = async (name: string) => ((await getJson('modelservice', name, msNs))?.metadata.finalizers as string[] | undefined) ?? [];

/** The Gateway hasher of Gateway `modelplane` (the routes' parentRef, in their namespace): `Kind/name` of its objects, and its --model flags. */
async function gatewayHasher(): Promise<{ objects: string[]; models: string[] }> {
  const kinds = 'services,deployments.apps,poddisruptionbudgets.policy,envoyextensionpolicies.gateway.envoyproxy.io';
  const out = await tb.kubectlOk(['get', kinds, '-n', routeNs, '-l', 'affinity.modelplane.ai/gateway=modelplane', '-o', 'json']);
  const items = (JSON.parse(out) as { items: Live[] }).items;
  const args: string[] = items.find((o) => o.kind === 'Deployment')?.spec?.template.spec.containers[0].args ?? [];
  return { objects: items.map((o) => `${o.kind}/${o.metadata.name}`).sort(), models: args.filter((_, i) => args[i - 1] === '--model') };
}
const GATEWAY_HASHER = 'modelplane-gateway-prefix-hash';
const GATEWAY_HASHER_OBJECTS = ['Deployment', 'EnvoyExtensionPolicy', 'PodDisruptionBudget', 'Service'].map((k) => `${k}/${GATEWAY_HASHER}`);

/** Our objects in the route namespace for ModelService `name` (by its labels: they have no ownerReference). */
async function elsewhere(name: string): Promise<string[]> {
  const selector = `affinity.modelplane.ai/model-service=${name},affinity.modelplane.ai/model-service-namespace=${msNs}`;
  const out = await tb.kubectlOk(['get', 'backendtrafficpolicies.gateway.envoyproxy.io,envoyextensionpolicies.gateway.envoyproxy.io', '-n', routeNs, '-l', selector, '-o', 'json']);
  return (JSON.parse(out) as { items: KubeObject[] }).items.map((o) => `${o.kind}/${o.metadata.name}`).sort();
}

beforeAll(async () => {
  tb = testbed();
  msNs = await createNamespace(tb, 'aigw-ms');
  routeNs = await createNamespace(tb, 'aigw-routes');
  healthPort = await freePort();
  reconciler = startProcess(
    process.execPath,
    [CLI, 'reconcile', '--ext-proc-image', IMAGE, '--leader-election-namespace', msNs, '--lease-duration', '3s', '--renew-deadline', '2s', '--retry-period', '500ms', '--health-port', String(healthPort), '--health-host', '127.0.0.1'],
    join(tb.dir, 'reconciler-aigateway-routes.log'),
    { ...process.env, KUBECONFIG: tb.kubeconfig, HOSTNAME: 'reconciler-aigateway-routes' },
  );
  // Ready as the leader with its informers listed (a standby is ready too, before it leads).
  await eventually('reconciler leading and ready', async () => {
    const r = await readyz(healthPort);
    return r.status === 200 && r.body.includes('informer ModelService');
  }, 60_000);
  const served = (await tb.kubectl(['get', 'crd', 'aigatewayroutes.aigateway.envoyproxy.io'])).code === 0;
  if (!served) {
    // Without Envoy AI Gateway the kind is a state, not a failure (the shared bed may already have its CRDs from another file).
    expect((await readyz(healthPort)).body).toContain('[+]informer AIGatewayRoute: not served by this cluster (optional)');
  }
  const files = (await aiGatewayCrdFiles()).filter((f) => f.endsWith('_aigatewayroutes.yaml'));
  await installCrds(tb, files);
}, 300_000);

afterAll(async () => {
  // The routes name the Gateway modelplane/modelplane-system, which the data-plane files of the same
  // control plane run for real: left behind, they would be its oldest routes and every request's first
  // match. Deleted while the reconciler runs, so it lets go of the ModelServices' finalizers.
  for (const [resource, namespace] of [['aigatewayroutes.aigateway.envoyproxy.io', routeNs], ['httproutes.gateway.networking.k8s.io', msNs], ['modelservices.modelplane.ai', msNs]] as const) {
    if (namespace !== undefined) await tb?.kubectl(['delete', resource, '--all', '-n', namespace, '--ignore-not-found', '--timeout=60s']);
  }
  await reconciler?.stop();
});

describe('an AIGatewayRoute in another namespace (Modelplane: modelplane-system)', () => {
  const names = () => crossNamespaceNames(msNs, 'kimi');

  it("gets its BackendTrafficPolicy in the route namespace, targeting its HTTPRoute by name, and its model in the hasher of the route's Gateway", async () => {
    await apply(aiGatewayRoute('kimi-route', `${msNs}/kimi`));
    await apply(modelService('kimi', { type: 'PrefixHash' }, { namespace: msNs }));
    const { backendTrafficPolicy } = names();
    // The CRD takes up to 30 s to be noticed when it arrived after the reconciler started.
    await eventually('the policy in the route namespace', async () => (await elsewhere('kimi')).length === 1, 90_000);
    expect(await elsewhere('kimi')).toEqual([`BackendTrafficPolicy/${backendTrafficPolicy}`]);

    const btp = await getJson('backendtrafficpolicies.gateway.envoyproxy.io', backendTrafficPolicy, routeNs);
    expect(btp?.spec?.targetRefs).toEqual([{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'kimi-route' }]);
    expect(btp?.spec?.loadBalancer).toMatchObject({ type: 'ConsistentHash', consistentHash: { type: 'Headers', headers: [{ name: 'x-prompt-hash' }] } });
    expect(btp?.metadata.ownerReferences).toBeUndefined();

    await eventually('the Gateway hasher', async () => (await gatewayHasher()).objects.length === 4);
    expect(await gatewayHasher()).toEqual({ objects: GATEWAY_HASHER_OBJECTS, models: [`${msNs}/kimi=Conversation:1024`] });
    // Accepted by Envoy Gateway's CRD schema: a Gateway target, the Service beside it.
    const eep = await getJson('envoyextensionpolicies.gateway.envoyproxy.io', GATEWAY_HASHER, routeNs);
    expect(eep?.spec?.targetRefs).toEqual([{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'modelplane' }]);
    expect(eep?.spec?.extProc[0].backendRefs).toMatchObject([{ group: '', kind: 'Service', name: GATEWAY_HASHER, port: 9002 }]);
    expect(eep?.metadata.ownerReferences).toBeUndefined();

    // A second PrefixHash ModelService on the same Gateway: one hasher, one --model each, with each one's settings.
    await apply(aiGatewayRoute('glm-route', `${msNs}/glm`));
    await apply(modelService('glm', { type: 'PrefixHash', prefixKey: 'Body', prefixBytes: 512 }, { namespace: msNs }));
    await eventually('both models in the Gateway hasher', async () => (await gatewayHasher()).models.length === 2);
    expect((await gatewayHasher()).models).toEqual([`${msNs}/glm=Body:512`, `${msNs}/kimi=Conversation:1024`]);
    await tb.kubectlOk(['delete', 'modelservice', 'glm', '-n', msNs]);
    await eventually('glm out of the Gateway hasher', async () => (await gatewayHasher()).models.length === 1);

    expect(await finalizers('kimi')).toContain(FINALIZER);
    await eventually('Applied, naming the route', async () => (await affinityReady('kimi'))?.message.includes(`routes: AIGatewayRoute ${routeNs}/kimi-route`) ?? false);
    expect(await affinityReady('kimi')).toMatchObject({ status: 'True', reason: 'Applied' });
    const events = JSON.parse(await tb.kubectlOk(['get', 'events', '-n', msNs, '--field-selector', 'involvedObject.name=kimi', '-o', 'json'])) as { items: { reason: string; message: string }[] };
    const attached = events.items.find((e) => e.reason === 'RouteAttached')?.message;
    expect(attached).toContain(`targets its HTTPRoute ${routeNs}/kimi-route by name`);
    expect(attached).toContain(`PrefixHash keys are set by the Gateway hasher ${routeNs}/${GATEWAY_HASHER} (Gateway modelplane)`);
  });

  it('puts a deleted Gateway hasher Deployment back', async () => {
    await tb.kubectlOk(['delete', 'deployments.apps', GATEWAY_HASHER, '-n', routeNs]);
    await eventually('Deployment back', async () => (await gatewayHasher()).objects.length === 4);
  });

  it('puts a deleted policy in the route namespace back (drift repair by label)', async () => {
    const { backendTrafficPolicy } = names();
    await tb.kubectlOk(['delete', 'backendtrafficpolicies.gateway.envoyproxy.io', backendTrafficPolicy, '-n', routeNs]);
    await eventually('policy back', async () => (await getJson('backendtrafficpolicies.gateway.envoyproxy.io', backendTrafficPolicy, routeNs)) !== undefined);
  });

  it('prunes the policy and the Gateway hasher (its last model gone) when affinity is set to None, and lets go of the finalizer', async () => {
    await apply(modelService('kimi', { type: 'None' }, { namespace: msNs }));
    await eventually('nothing left in the route namespace', async () => (await elsewhere('kimi')).length === 0);
    await eventually('no Gateway hasher', async () => (await gatewayHasher()).objects.length === 0);
    await eventually('finalizer removed', async () => !(await finalizers('kimi')).includes(FINALIZER));
    expect(await affinityReady('kimi')).toMatchObject({ reason: 'AffinityDisabled' });
  });

  it('cleans them up when the ModelService is deleted: the finalizer holds the deletion until its policy is gone, and the Gateway hasher goes with its last model', async () => {
    await apply(modelService('kimi', { type: 'PrefixHash' }, { namespace: msNs }));
    await eventually('the policy is back', async () => (await elsewhere('kimi')).length === 1);
    await eventually('the Gateway hasher is back', async () => (await gatewayHasher()).objects.length === 4);
    await eventually('finalizer', async () => (await finalizers('kimi')).includes(FINALIZER));
    await tb.kubectlOk(['delete', 'modelservice', 'kimi', '-n', msNs, '--wait=false']);
    await eventually('ModelService gone', async () => (await getJson('modelservice', 'kimi', msNs)) === undefined);
    expect(await elsewhere('kimi')).toEqual([]);
    await eventually('no Gateway hasher', async () => (await gatewayHasher()).objects.length === 0);
  });
});

describe('routes that get no affinity, reported with where and why', () => {
  it('a rule to an InferencePool: the condition says AI Gateway replaces the load balancing there', async () => {
    await apply(aiGatewayRoute('pool-route', `${msNs}/pool`, [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'pool-epp' }]));
    await apply(modelService('pool', { type: 'Session', sessionHeader: 'X-Session-ID' }, { namespace: msNs }));
    await eventually('InferencePoolBackend', async () => (await affinityReady('pool'))?.reason === 'InferencePoolBackend');
    expect((await affinityReady('pool'))?.message).toContain(
      `rule 0 of AIGatewayRoute ${routeNs}/pool-route routes to InferencePool pool-epp: AI Gateway makes its cluster ORIGINAL_DST and routes to the endpoint ` +
        'its endpoint picker names, replacing the load-balancing policy, so cluster affinity cannot apply there; the endpoint picker chooses the replica',
    );
    // Nothing to attach to: no policy in the route namespace, no finalizer.
    expect(await elsewhere('pool')).toEqual([]);
    expect(await finalizers('pool')).not.toContain(FINALIZER);
  });

  it('the HTTPRoute AI Gateway generated in the ModelService namespace (labels copied) is read too', async () => {
    await apply({
      apiVersion: 'gateway.networking.k8s.io/v1',
      kind: 'HTTPRoute',
      metadata: { name: 'qwen', namespace: msNs, labels: { 'affinity.modelplane.ai/model-service': 'qwen' }, annotations: { 'gateway.envoyproxy.io/ai-gateway-generated': 'true' } },
      spec: {
        parentRefs: [{ name: 'modelplane', namespace: 'modelplane-system' }],
        rules: [
          { matches: [{ headers: [{ type: 'Exact', name: 'x-ai-eg-model', value: `${msNs}/qwen` }] }], backendRefs: [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'qwen-epp' }] },
          { matches: [{ path: { type: 'PathPrefix', value: '/' } }] },
        ],
      },
    });
    await apply(modelService('qwen', { type: 'Session', sessionHeader: 'X-Session-ID' }, { namespace: msNs }));
    await eventually('InferencePoolBackend', async () => (await affinityReady('qwen'))?.reason === 'InferencePoolBackend');
    expect((await affinityReady('qwen'))?.message).toContain(`rule 0 of AIGatewayRoute ${msNs}/qwen routes to InferencePool qwen-epp`);
  });
});
