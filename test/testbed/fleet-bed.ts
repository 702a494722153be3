// The whole fleet on one machine, as the data-plane tests and benchmarks use
// it: the control plane (from the caller), Envoy Gateway's controller with a
// real Envoy (data-plane.ts), our reconciler (the CLI), the hasher pods the
// reconciler's Deployments ask for (hasher-pods.ts), and inference clusters
// on 127.0.0.x (inference-cluster.ts) behind Backends and HTTPRoutes in both
// route shapes (fleet.ts). Everything it starts, stop() stops.
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { generatedNames } from '../../src/naming.ts';
import type { Kubectl } from './control-plane.ts';
import { resetConnections, send } from './conversations.ts';
import { type AiGateway, aiServiceBackend, startAiGatewayDataPlane } from './ai-gateway.ts';
import { type DataPlane, GATEWAY_NAME, GATEWAY_NAMESPACE, clientTrafficPolicy, startDataPlane } from './data-plane.ts';
import { formatModelFlag, gatewayHasherName } from '../../src/gateway-hasher.ts';
import { mutateModelService } from '../../src/admission.ts';
import type { Affinity, ModelService } from '../../src/model-service.ts';

/** The fleet Gateway's hasher (the AI Gateway beds' routes all attach to that Gateway). */
export const GATEWAY_HASHER = gatewayHasherName({ namespace: GATEWAY_NAMESPACE, name: GATEWAY_NAME });
import { type ClusterAddress, type RouteShapeName, backend, httpRoute, routePrefix, yamlDocuments } from './fleet.ts';
import { type HasherPods, startHasherPods } from './hasher-pods.ts';
import { type InferenceCluster, startInferenceCluster } from './inference-cluster.ts';
import { type ManagedProcess, startProcess, waitFor } from './processes.ts';
import { CLI } from './webhook.ts';

export type AffinityMode = 'None' | 'Session' | 'PrefixHash';
export const SESSION_HEADER = 'X-Session-ID';

export interface FleetBedOptions {
  kubectl: Kubectl;
  kubeconfig: string;
  dir: string;
  namespace: string;
  /** Inference clusters started (cluster-a, cluster-b, ...). */
  clusters: number;
  coldMs: number;
  warmMs: number;
  /** ModelService name → the shape of its HTTPRoute. */
  routes: Record<string, RouteShapeName>;
  /**
   * Envoy AI Gateway in front (test/testbed/ai-gateway.ts), with an AIServiceBackend over each
   * cluster's Backend. models: ModelService name → the model its AIGatewayRoute (which the caller
   * applies) serves; requests go to /v1/chat/completions with that model in the body. The route has
   * the ModelService's name and namespace unless `routes` says where it is.
   */
  aiGateway?: { models: Record<string, string>; routes?: Record<string, { namespace: string; name: string }> };
}

export interface FleetBed {
  dataPlane: DataPlane;
  /** With options.aiGateway. */
  aiGateway?: AiGateway;
  clusters: InferenceCluster[];
  hashers: HasherPods;
  reconciler: ManagedProcess;
  /** The URL of a ModelService's chat completions, through the gateway. */
  url(modelService: string): string;
  /**
   * Applies a ModelService with this affinity (through our webhook) and waits until Envoy routes by it
   * and, for PrefixHash, until requests carry the hasher's x-prompt-hash (unless wait.hasher is false).
   */
  /** `wait.gatewayHasher`: under PrefixHash, wait for the Gateway hasher (GATEWAY_HASHER) to key the model rather than for the ModelService's own hasher. */
  setAffinity(modelService: string, mode: AffinityMode, extra?: Record<string, unknown>, wait?: { hasher?: boolean; gatewayHasher?: boolean }): Promise<void>;
  /** Rewrites a ModelService's HTTPRoute over these clusters (by name) and waits until Envoy has the new endpoints. */
  setRouteClusters(modelService: string, clusterNames: readonly string[]): Promise<void>;
  /** Runs fn with the Gateway's ClientTrafficPolicy (the early x-prompt-hash removal) deleted, then puts it back. */
  withoutClientTrafficPolicy(fn: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

const IMAGE = 'registry.example/modelplane-affinity:testbed';

/** The route entry of Envoy's live configuration for a ModelService's path prefix (or whose name starts with `name`), as JSON text. */
async function liveRoute(dataPlane: DataPlane, prefix: string, name?: string): Promise<string | undefined> {
  const dump = (await dataPlane.configDump()) as { configs?: Array<Record<string, unknown>> };
  for (const config of dump.configs ?? []) {
    if (!String(config['@type']).endsWith('RoutesConfigDump')) continue;
    for (const dynamic of (config['dynamic_route_configs'] as Array<{ route_config?: { virtual_hosts?: Array<{ routes?: unknown[] }> } }>) ?? []) {
      for (const host of dynamic.route_config?.virtual_hosts ?? []) {
        for (const route of host.routes ?? []) {
          const text = JSON.stringify(route);
          if (text.includes(JSON.stringify(prefix.replace(/\/$/, ''))) || (name !== undefined && text.includes(`"name":"${name}`))) return text;
        }
      }
    }
  }
  return undefined;
}

const MAGLEV = 'envoy.load_balancing_policies.maglev';

interface LiveCluster {
  name?: string;
  lb_policy?: string;
  load_balancing_policy?: { policies?: Array<{ typed_extension_config?: { name?: string } }> };
}

/**
 * The load-balancing policy of each Envoy cluster of a ModelService's route (Envoy Gateway names
 * them httproute/<ns>/<name>/rule/...): the typed extension's name, which is how Envoy Gateway
 * v1.9 configures Maglev, else the legacy lb_policy enum.
 */
async function liveClusterPolicies(dataPlane: DataPlane, namespace: string, modelService: string): Promise<string[]> {
  const dump = (await dataPlane.configDump()) as { configs?: Array<Record<string, unknown>> };
  const policies: string[] = [];
  for (const config of dump.configs ?? []) {
    if (!String(config['@type']).endsWith('ClustersConfigDump')) continue;
    for (const active of (config['dynamic_active_clusters'] as Array<{ cluster?: LiveCluster }>) ?? []) {
      const cluster = active.cluster;
      if (!cluster?.name?.startsWith(`httproute/${namespace}/${modelService}/`)) continue;
      policies.push(cluster.load_balancing_policy?.policies?.[0]?.typed_extension_config?.name ?? cluster.lb_policy ?? 'ROUND_ROBIN');
    }
  }
  return policies;
}

export interface RoutedBy {
  dataPlane: DataPlane;
  hashers: HasherPods;
  namespace: string;
  modelService: string;
  mode: AffinityMode;
  /** A chat completions URL of the ModelService's route, for the hasher probe. */
  url: string;
  /** The probe body's model ('probe' when absent). */
  model?: string;
  /** The AIGatewayRoute whose HTTPRoute (same name and namespace) routes the ModelService: its first rule's route and clusters, not the path prefix's. */
  aiGatewayRoute?: { namespace: string; name: string };
  /** false: do not wait for a hasher-set x-prompt-hash. */
  hasher?: boolean;
  /** The Gateway hasher's Deployment (src/gateway-hasher.ts) to wait for, running with this --model value, instead of the ModelService's own. */
  gatewayHasher?: { deployment: string; modelFlag: string };
  diagnose?: () => string;
}

/**
 * Waits until Envoy routes a ModelService by its affinity: the route's hash_policy names the header
 * (or is gone for None), the route's clusters balance with Maglev (or not), and for PrefixHash a
 * request reaches a cluster with a hash the hasher set. Routes and clusters arrive in separate xDS
 * updates; a request between them hashes into a cluster that does not balance by hash yet.
 */
export async function waitUntilRouted(r: RoutedBy): Promise<void> {
  const { dataPlane, namespace: ns, modelService: ms, mode } = r;
  // Envoy Gateway keeps the header name's letter case in the hash policy; Envoy compares it case-insensitively.
  const header = (mode === 'Session' ? SESSION_HEADER : 'x-prompt-hash').toLowerCase();
  await waitFor(
    `Envoy's route for ${ns}/${ms} to ${mode === 'None' ? 'hash nothing' : `hash ${header} into Maglev clusters`}`,
    async () => {
      const ai = r.aiGatewayRoute;
      const route = await liveRoute(dataPlane, routePrefix(ns, ms), ai && `httproute/${ai.namespace}/${ai.name}/rule/0/`);
      const policies = await liveClusterPolicies(dataPlane, ai?.namespace ?? ns, ai?.name ?? ms);
      if (route === undefined || policies.length === 0) return false;
      return mode === 'None'
        ? !route.includes('"hash_policy"') && policies.every((p) => p !== MAGLEV)
        : route.toLowerCase().includes(`"header_name":"${header}"`) && policies.every((p) => p === MAGLEV);
    },
    90_000,
    r.diagnose,
  );
  // A filter added or removed is a new listener: connections opened before keep the old filters.
  resetConnections();
  if (mode !== 'PrefixHash') return;
  if (r.gatewayHasher === undefined) await r.hashers.waitForPod(generatedNames(ms).prefixHash, 90_000);
  else {
    const { deployment, modelFlag } = r.gatewayHasher;
    await waitFor(`the Gateway hasher ${deployment} to run with --model ${modelFlag}`, async () => r.hashers.pod(deployment)?.args.includes(modelFlag) ?? false, 90_000, r.diagnose);
  }
  if (r.hasher === false) return;
  await waitFor(
    `requests to ${ms} to carry a hasher-set x-prompt-hash`,
    async () => {
      const probe = await send(r.url, JSON.stringify({ model: r.model ?? 'probe', messages: [{ role: 'user', content: `probe ${Date.now()}` }] }));
      return probe.status === 200 && /^[0-9a-f]{16}$/.test(probe.promptHash);
    },
    90_000,
    r.diagnose,
  );
}

export async function startFleetBed(options: FleetBedOptions): Promise<FleetBed> {
  const k = options.kubectl;
  const ns = options.namespace;
  const stops: Array<() => Promise<void>> = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((error: unknown) => process.stderr.write(`[fleet-bed] stop: ${String(error)}\n`));
  };
  // The integration files share one control plane and its directory: each fleet bed writes its
  // logs, hasher pods and data plane into a directory of its own.
  const dir = mkdtempSync(join(options.dir, 'fleet-'));
  try {
    const clusters: InferenceCluster[] = [];
    for (let i = 0; i < options.clusters; i++) {
      const cluster = await startInferenceCluster({ name: `cluster-${String.fromCharCode(97 + i)}`, host: `127.0.0.${11 + i}`, coldMs: options.coldMs, warmMs: options.warmMs });
      clusters.push(cluster);
      stops.push(() => cluster.close());
    }
    const addresses: ClusterAddress[] = clusters.map((c) => ({ name: c.name, host: c.host, port: c.port }));
    const dataPlaneOptions = { kubectl: k, kubeconfig: options.kubeconfig, dir: join(dir, 'data-plane') };
    const ai = options.aiGateway === undefined ? undefined : await startAiGatewayDataPlane(dataPlaneOptions);
    const dataPlane = ai ?? (await startDataPlane(dataPlaneOptions));
    stops.push(() => dataPlane.stop());
    const reconciler = startProcess(process.execPath, [CLI, 'reconcile', '--ext-proc-image', IMAGE, '--leader-election-namespace', ns], join(dir, 'reconciler.log'), {
      ...process.env,
      KUBECONFIG: options.kubeconfig,
      HOSTNAME: 'data-plane-reconciler',
    });
    stops.push(() => reconciler.stop());
    // A Gateway's hasher sits in the Gateway's namespace.
    const hashers = startHasherPods({ kubectl: k, namespace: ns, alsoNamespaces: ai === undefined ? [] : [GATEWAY_NAMESPACE], dir });
    stops.push(() => hashers.stop());
    await k.kubectlOk(['apply', '-f', '-'], {
      input: yamlDocuments([
        ...addresses.map((c) => backend(ns, c)),
        ...(ai === undefined ? [] : addresses.map((c) => aiServiceBackend(ns, c))),
        ...Object.entries(options.routes).map(([ms, shape]) => httpRoute(ns, ms, shape, addresses)),
      ]),
    });
    const models = options.aiGateway?.models;
    const url = (ms: string) => (models === undefined ? `${dataPlane.gatewayUrl}${routePrefix(ns, ms)}v1/chat/completions` : `${dataPlane.gatewayUrl}/v1/chat/completions`);

    async function setAffinity(ms: string, mode: AffinityMode, extra: Record<string, unknown> = {}, wait: { hasher?: boolean; gatewayHasher?: boolean } = {}): Promise<void> {
      const affinity = mode === 'Session' ? { type: mode, sessionHeader: SESSION_HEADER, ...extra } : { type: mode, ...extra };
      const modelService: ModelService = { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: ms, namespace: ns }, spec: { endpoints: clusters.map(() => ({ weight: 1 })), affinity: affinity as Affinity } };
      await k.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService) });
      const model = models?.[ms];
      // The flag the reconciler gives the Gateway hasher for this model, from the settings as the webhook defaults them.
      const { prefixKey, prefixBytes } = mutateModelService(modelService).spec?.affinity ?? {};
      const gatewayHasher = wait.gatewayHasher && model !== undefined && prefixKey !== undefined && prefixBytes !== undefined ? { gatewayHasher: { deployment: GATEWAY_HASHER, modelFlag: formatModelFlag({ model, prefixKey, prefixBytes }) } } : {};
      const ai = models === undefined ? {} : { model, aiGatewayRoute: options.aiGateway?.routes?.[ms] ?? { namespace: ns, name: ms }, ...gatewayHasher };
      await waitUntilRouted({ dataPlane, hashers, namespace: ns, modelService: ms, mode, url: url(ms), ...ai, ...(wait.hasher === undefined ? {} : { hasher: wait.hasher }), diagnose: () => reconciler.tail(20) });
    }

    async function withoutClientTrafficPolicy(fn: () => Promise<void>): Promise<void> {
      const policy = clientTrafficPolicy();
      // Envoy Gateway turns earlyRequestHeaders.remove into the connection manager's early header mutation.
      const removal = async () => JSON.stringify(await dataPlane.configDump()).includes('"remove":"x-prompt-hash"');
      await k.kubectlOk(['delete', 'clienttrafficpolicy', policy.metadata.name, '-n', policy.metadata.namespace]);
      try {
        await waitFor("Envoy's listener without the early x-prompt-hash removal", async () => !(await removal()), 90_000);
        resetConnections();
        await fn();
      } finally {
        await k.kubectlOk(['apply', '-f', '-'], { input: stringify(policy) });
        await waitFor("Envoy's listener with the early x-prompt-hash removal", removal, 90_000);
        resetConnections();
      }
    }

    async function setRouteClusters(ms: string, clusterNames: readonly string[]): Promise<void> {
      const shape = options.routes[ms];
      if (shape === undefined) throw new Error(`no route for ModelService ${ms} in this fleet`);
      const chosen = addresses.filter((a) => clusterNames.includes(a.name));
      await k.kubectlOk(['apply', '-f', '-'], { input: yamlDocuments([httpRoute(ns, ms, shape, chosen)]) });
      // Envoy has the new endpoints once distinct requests reach exactly these clusters.
      await waitFor(
        `Envoy to route ${ms} to ${clusterNames.join(', ')}`,
        async () => {
          const seen = new Set<string>();
          for (let i = 0; i < 30; i++) {
            const r = await send(url(ms), JSON.stringify({ model: 'probe', messages: [{ role: 'user', content: `route probe ${i} ${Date.now()}` }] }), { [SESSION_HEADER]: `probe-${i}-${Date.now()}` });
            seen.add(r.cluster);
          }
          return seen.size === clusterNames.length && clusterNames.every((n) => seen.has(n));
        },
        90_000,
      );
    }

    return { dataPlane, ...(ai === undefined ? {} : { aiGateway: ai.aiGateway }), clusters, hashers, reconciler, url, setAffinity, setRouteClusters, withoutClientTrafficPolicy, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
