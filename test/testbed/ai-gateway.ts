// Envoy AI Gateway v1.0.0 beside the data plane's Envoy Gateway v1.9.0
// controller (tools/aigateway/RECIPE.md), every part a host process:
// - its CRDs from the module zip (RECIPE §4);
// - its controller, with its Envoy Gateway extension server, in a network
//   namespace of its own, because it binds 8080 and 18002 as Envoy Gateway
//   does; unix-socket relays join it to the API server and give Envoy
//   Gateway its extension server (RECIPE §1.3);
// - Envoy Gateway's `extensionManager` pointing at that socket (RECIPE §2);
// - a stand-in Pod with the Gateway's owning labels, without which the
//   controller never writes the filter-config Secret (RECIPE §3.3);
// - the router-level ext_proc on a unix socket, bind-mounted at the fixed
//   path Envoy is told to dial in Envoy Gateway's mount namespace, its
//   config synced from that Secret to a file (RECIPE §3.4).
// Start order as RECIPE §8: CRDs, webhook configuration, controller, Envoy
// Gateway, stand-in Pod, extproc. stop() stops all of it. Nothing here
// downloads: the binaries come from AIGATEWAY_TOOLS' cache (or are built).
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { parse, stringify } from 'yaml';
import type { Kubectl } from './control-plane.ts';
import { aiGatewayCrdFiles, installCrds } from './crds.ts';
import { type DataPlane, type DataPlaneOptions, EG_NAMESPACE, GATEWAY_NAME, GATEWAY_NAMESPACE, GATEWAY_PORT, startDataPlane } from './data-plane.ts';
import { type ClusterAddress } from './fleet.ts';
import { AIGATEWAY_TOOLS, REPO_ROOT, ensureGoTools } from './go-tools.ts';
import { makeCa, makeLeaf } from './pki.ts';
import { type ManagedProcess, startProcess, waitFor } from './processes.ts';
import { type Relay, relay } from './relay.ts';

export const AIGW_API_VERSION = 'aigateway.envoyproxy.io/v1beta1';
/** Only the controller's webhook configuration name uses it (POD_NAMESPACE). */
const AIGW_NAMESPACE = 'envoy-ai-gateway-system';
/** The socket folder AI Gateway's extension server writes into every Envoy's xDS (a constant in cmd/controller). */
export const EXTPROC_UDS_DIR = '/etc/ai-gateway-extproc-uds';
/** The header AI Gateway's router-level ext_proc sets from the body's model. */
export const MODEL_HEADER = 'x-ai-eg-model';
/** The filter-config Secret of the fleet Gateway (FilterConfigSecretPerGatewayName: <gateway>-<namespace>). */
const FILTER_CONFIG_SECRET = `${GATEWAY_NAME}-${GATEWAY_NAMESPACE}`;
const EXTENSION_PORT = 1063;
const RELAY = join(REPO_ROOT, 'test', 'testbed', 'relay.ts');

function log(message: string): void {
  process.stderr.write(`[ai-gateway] ${message}\n`);
}

export function aiServiceBackend(namespace: string, cluster: Pick<ClusterAddress, 'name'>): Record<string, unknown> {
  return {
    apiVersion: AIGW_API_VERSION,
    kind: 'AIServiceBackend',
    metadata: { name: cluster.name, namespace },
    spec: { schema: { name: 'OpenAI' }, backendRef: { group: 'gateway.envoyproxy.io', kind: 'Backend', name: cluster.name } },
  };
}

export interface RouteBackend {
  /** The AIServiceBackend (named as its cluster). */
  name: string;
  priority?: number;
}

/** An AIGatewayRoute on the fleet Gateway with one rule: `x-ai-eg-model: <model>` to these backends. */
export function aiGatewayRoute(namespace: string, name: string, model: string, backends: readonly RouteBackend[], labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: AIGW_API_VERSION,
    kind: 'AIGatewayRoute',
    metadata: { name, namespace, labels },
    spec: {
      parentRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: GATEWAY_NAME, namespace: GATEWAY_NAMESPACE }],
      rules: [
        {
          matches: [{ headers: [{ type: 'Exact', name: MODEL_HEADER, value: model }] }],
          backendRefs: backends.map((b) => ({ name: b.name, weight: 1, ...(b.priority === undefined ? {} : { priority: b.priority }) })),
        },
      ],
    },
  };
}

export interface AiGateway {
  controller: ManagedProcess;
  /** The router-level ext_proc (undefined before the filter config first exists). */
  extProc(): ManagedProcess | undefined;
  /** Waits until the extproc has loaded a filter config that names every one of these models. */
  waitForModels(models: readonly string[], timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export interface AiGatewayDataPlane extends DataPlane {
  aiGateway: AiGateway;
}

/** grpc.health.v1 Check over a unix socket, bounded by 2 s in all (a call on a half-open relay would otherwise wait forever). */
function healthServing(socket: string): Promise<boolean> {
  const Health = grpc.makeClientConstructor(healthService, 'Health');
  const client = new Health(`unix:${socket}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check(req: object, metadata: grpc.Metadata, options: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: { status?: string }) => void): void;
  };
  return new Promise<boolean>((resolve) => {
    client.check({ service: '' }, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (error, response) => resolve(error === null && response?.status === 'SERVING'));
  }).finally(() => client.close());
}

/** Every process the controller side runs, under `unshare --net` (loopback only): sh starts the relays, then execs the program. */
function inOwnNetwork(script: string, args: string[]): string[] {
  return ['--net', '--', 'sh', '-c', `ip link set lo up || exit 1\n${script}`, 'sh', ...args];
}

async function writeWebhookConfiguration(k: Kubectl, caPem: string): Promise<void> {
  // The controller exits unless this exists with exactly one webhook; the API server never calls it:
  // its objectSelector matches nothing (failurePolicy Ignore besides). The controller rewrites the
  // caBundle with its own ca.crt, which is what is set here.
  await k.kubectlOk(['apply', '--server-side', '--force-conflicts', '--field-manager', 'testbed-ai-gateway', '-f', '-'], {
    input: stringify({
      apiVersion: 'admissionregistration.k8s.io/v1',
      kind: 'MutatingWebhookConfiguration',
      metadata: { name: `envoy-ai-gateway-gateway-pod-mutator.${AIGW_NAMESPACE}` },
      webhooks: [
        {
          name: 'envoy-ai-gateway-gateway-pod-mutator.envoyproxy.io',
          clientConfig: { url: 'https://127.0.0.1:9443/mutate', caBundle: Buffer.from(caPem).toString('base64') },
          rules: [{ apiGroups: [''], apiVersions: ['v1'], operations: ['CREATE'], resources: ['pods'], scope: 'Namespaced' }],
          objectSelector: { matchExpressions: [{ key: 'testbed.modelplane.ai/never', operator: 'Exists' }] },
          failurePolicy: 'Ignore',
          sideEffects: 'None',
          admissionReviewVersions: ['v1'],
        },
      ],
    }),
  });
}

/** The stand-in for the Gateway's Envoy pod (Host infrastructure has none); it stays Pending, nothing schedules it. */
function standInPod(): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `envoy-${GATEWAY_NAME}-stand-in`,
      namespace: EG_NAMESPACE,
      labels: { 'gateway.envoyproxy.io/owning-gateway-name': GATEWAY_NAME, 'gateway.envoyproxy.io/owning-gateway-namespace': GATEWAY_NAMESPACE },
    },
    spec: { containers: [{ name: 'envoy', image: 'registry.example/host-envoy:stand-in' }] },
  });
}

/**
 * Envoy Gateway's data plane (startDataPlane) with Envoy AI Gateway wired in. Everything the
 * data plane does without it stays as it is; stop() stops both.
 */
export async function startAiGatewayDataPlane(options: DataPlaneOptions & { dir: string }): Promise<AiGatewayDataPlane> {
  const k = options.kubectl;
  const bin = await ensureGoTools(AIGATEWAY_TOOLS);
  // Inside the data plane's folder; the socket paths stay well under the 108-byte limit.
  const dir = join(options.dir, 'ai-gateway');
  const certs = join(dir, 'certs');
  const udsDir = join(dir, 'uds');
  const configDir = join(dir, 'filter-config');
  for (const d of [certs, udsDir, configDir]) mkdirSync(d, { recursive: true });
  const apiSocket = join(dir, 'api.sock');
  const extensionSocket = join(dir, 'ext.sock');
  const configFile = join(configDir, 'filter-config.yaml');
  const env = { ...process.env, KUBECONFIG: options.kubeconfig, DISABLE_PPROF: '1' };

  let rootRelay: Relay | undefined;
  let controller: ManagedProcess | undefined;
  let dataPlane: DataPlane | undefined;
  let extProc: ManagedProcess | undefined;
  let syncing = false;
  let syncLoop: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    syncing = false;
    await syncLoop;
    // SIGKILL: on SIGTERM the extproc sleeps 15 s before it stops (cmd/extproc/main.go).
    await extProc?.stop('SIGKILL');
    await dataPlane?.stop();
    await controller?.stop('SIGTERM', 10_000);
    await rootRelay?.close();
    await k.kubectl(['delete', 'pod', `envoy-${GATEWAY_NAME}-stand-in`, '-n', EG_NAMESPACE, '--ignore-not-found', '--wait=false']);
  };
  try {
    log('installing the AI Gateway CRDs (v1.0.0 module zip)');
    await installCrds(k, await aiGatewayCrdFiles());
    const ca = makeCa(certs, 'ca', 'modelplane-affinity-ai-gateway-ca');
    makeLeaf(certs, 'tls', ca, { commonName: 'ai-gateway-controller', dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], usage: 'server' });
    await writeWebhookConfiguration(k, ca.certPem);

    // The API server, seen from the controller's network namespace at the same 127.0.0.1:PORT (its certificate fits).
    const kubeconfig = parse(readFileSync(options.kubeconfig, 'utf8')) as { clusters: Array<{ cluster: { server: string } }> };
    const apiPort = new URL(kubeconfig.clusters[0]?.cluster.server ?? '').port;
    rootRelay = await relay(`unix:${apiSocket}`, `tcp:127.0.0.1:${apiPort}`);
    log(`starting the AI Gateway controller (extension server ${extensionSocket}) in a network namespace of its own`);
    controller = startProcess(
      'unshare',
      inOwnNetwork(
        [
          '"$NODE" "$RELAY" "tcp:127.0.0.1:$1" "unix:$2" "$7.api" &',
          '"$NODE" "$RELAY" "unix:$3" "tcp:127.0.0.1:$4" "$7.ext" &',
          // The controller's first call is to the API server: both relays must listen first (a fixed sleep lost that race on a loaded machine).
          'i=0; while [ ! -e "$7.api" ] || [ ! -e "$7.ext" ]; do i=$((i+1)); [ $i -gt 600 ] && { echo "relays not listening after 30 s" >&2; exit 1; }; sleep 0.05; done',
          'exec "$5" -enableLeaderElection=false -tlsCertDir="$6" -port="127.0.0.1:$4" -webhookPort=9443 -logLevel=info',
        ].join('\n'),
        [apiPort, apiSocket, extensionSocket, String(EXTENSION_PORT), join(bin, 'aigw-controller'), certs, join(dir, 'relay-ready')],
      ),
      join(dir, 'controller.log'),
      { ...env, POD_NAMESPACE: AIGW_NAMESPACE, NODE: process.execPath, RELAY },
      { processGroup: true },
    );
    const running = controller;
    await waitFor('the AI Gateway extension server to serve (gRPC health)', () => healthServing(extensionSocket), 120_000, () => running.tail(30));

    dataPlane = await startDataPlane({
      ...options,
      // The AI Gateway chart's Envoy Gateway values (manifests/envoy-gateway-values.yaml), over a unix socket.
      extensionManager: {
        hooks: {
          xdsTranslator: {
            translation: { listener: { includeAll: true }, route: { includeAll: true }, cluster: { includeAll: true }, secret: { includeAll: true } },
            post: ['Translation', 'Cluster', 'Route'],
          },
        },
        service: { unix: { path: extensionSocket } },
      },
      bindMounts: [{ source: udsDir, target: EXTPROC_UDS_DIR }],
    });

    await k.kubectlOk(['apply', '-f', '-'], { input: standInPod() });
    // The filter config: the Secret's filter-config.yaml, copied to a file on every change (tmp + rename,
    // so the extproc's 5 s poll never reads half a file).
    let written = '';
    let loadsAtWrite = 0;
    const loads = () => (extProc?.tail(100_000).match(/loading a new config/g) ?? []).length;
    const sync = async () => {
      const r = await k.kubectl(['get', 'secret', FILTER_CONFIG_SECRET, '-n', EG_NAMESPACE, '-o', 'jsonpath={.data.filter-config\\.yaml}']);
      if (r.code !== 0 || r.stdout === '') return;
      const text = Buffer.from(r.stdout, 'base64').toString('utf8');
      if (text === written) return;
      loadsAtWrite = loads();
      writeFileSync(`${configFile}.tmp`, text);
      renameSync(`${configFile}.tmp`, configFile);
      written = text;
    };
    await waitFor(`Secret ${EG_NAMESPACE}/${FILTER_CONFIG_SECRET} (the filter config)`, async () => (await sync(), written !== ''), 60_000, () => running.tail(20));
    syncing = true;
    syncLoop = (async () => {
      while (syncing) {
        await sync().catch((error: unknown) => log(`filter config sync: ${String(error)}`));
        await new Promise((r) => setTimeout(r, 500));
      }
    })();

    log(`starting the AI Gateway extproc on ${join(udsDir, 'run.sock')} (Envoy dials ${EXTPROC_UDS_DIR}/run.sock)`);
    extProc = startProcess(
      'unshare',
      inOwnNetwork('exec "$@"', [
        join(bin, 'aigw-extproc'),
        `-configPath=${configFile}`,
        `-extProcAddr=unix://${join(udsDir, 'run.sock')}`,
        '-adminPort=1064',
        '-rootPrefix=/',
        '-maxRecvMsgSize=536870912',
        '-logLevel=info',
      ]),
      join(dir, 'extproc.log'),
      env,
    );
    const started = extProc;
    await waitFor('the AI Gateway extproc to be ready', async () => started.tail(200).includes('AI Gateway External Processor is ready'), 60_000, () => started.tail(30));
    await waitFor('the extproc to serve gRPC health on its socket', () => healthServing(join(udsDir, 'run.sock')), 30_000, () => started.tail(30));
    const aiGateway: AiGateway = {
      controller: running,
      extProc: () => extProc,
      async waitForModels(models, timeoutMs = 60_000) {
        await waitFor(
          `the AI Gateway extproc to load a filter config naming ${models.join(', ')}`,
          async () => {
            const config = parse(written) as { models?: Array<{ Name?: string }> } | null;
            const names = new Set((config?.models ?? []).map((m) => m.Name));
            return models.every((m) => names.has(m)) && loads() > loadsAtWrite;
          },
          timeoutMs,
          () => `${running.tail(10)}\n${started.tail(10)}`,
        );
      },
      stop,
    };
    log('AI Gateway wired in: controller, extension server, filter config, extproc');
    const plane = dataPlane;
    return { ...plane, stop, aiGateway };
  } catch (error) {
    await stop();
    throw error;
  }
}

// --- reading Envoy's live configuration (GET /config_dump) for the attachment evidence ----------

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface LiveFilter {
  name: string;
  /** Disabled by default: it runs only for a request whose first route match enables it. */
  disabled: boolean;
}

export interface LiveRoute {
  name: string;
  /** The path match as Envoy has it (prefix or path_separated_prefix). */
  prefix: string;
  /** Exact header matches, `name=value`. */
  headers: string[];
  /** The filters this route enables (its typed_per_filter_config keys). */
  enables: string[];
}

function dumpOf(dump: unknown, suffix: string): Json[] {
  return ((dump as Json).configs ?? []).filter((c: Json) => String(c['@type']).endsWith(suffix));
}

/** The HTTP filters of the Gateway listener's connection manager (GATEWAY_PORT), in order. */
export function listenerFilters(dump: unknown): LiveFilter[] {
  for (const listeners of dumpOf(dump, 'ListenersConfigDump')) {
    for (const dynamic of listeners.dynamic_listeners ?? []) {
      const listener = dynamic.active_state?.listener ?? {};
      if (listener.address?.socket_address?.port_value !== GATEWAY_PORT) continue;
      const chains = [...(listener.default_filter_chain ? [listener.default_filter_chain] : []), ...(listener.filter_chains ?? [])];
      for (const chain of chains) {
        for (const filter of chain.filters ?? []) {
          const http = filter.typed_config?.http_filters as Json[] | undefined;
          if (http !== undefined) return http.map((f) => ({ name: String(f.name), disabled: f.disabled === true }));
        }
      }
    }
  }
  return [];
}

/** The Gateway's routes in Envoy's order (the first that matches wins). */
export function liveRoutes(dump: unknown): LiveRoute[] {
  return dumpOf(dump, 'RoutesConfigDump').flatMap((routes) =>
    (routes.dynamic_route_configs ?? []).flatMap((d: Json) =>
      (d.route_config?.virtual_hosts ?? []).flatMap((vh: Json) =>
        (vh.routes ?? []).map((r: Json) => ({
          name: String(r.name),
          prefix: String(r.match?.prefix ?? r.match?.path_separated_prefix ?? r.match?.path ?? ''),
          headers: (r.match?.headers ?? []).map((h: Json) => `${h.name}=${h.string_match?.exact ?? '?'}`),
          enables: Object.keys(r.typed_per_filter_config ?? {}),
        })),
      ),
    ),
  );
}

/** The route a request with these headers matches first (exact header matches and path prefixes only, which is all these routes use). */
export function firstMatch(routes: readonly LiveRoute[], path: string, headers: Record<string, string>): LiveRoute | undefined {
  return routes.find(
    (r) =>
      path.startsWith(r.prefix) &&
      (r.prefix === '/' || r.prefix.endsWith('/') || path.length === r.prefix.length || path[r.prefix.length] === '/') &&
      r.headers.every((h) => {
        const at = h.indexOf('=');
        return headers[h.slice(0, at)] === h.slice(at + 1);
      }),
  );
}

/**
 * A cluster's discovery type and the priority of each of its localities as Envoy has them (a dump
 * taken with ?include_eds). Envoy Gateway sends static IP Backends' endpoints by EDS, and gives an
 * fqdn Backend's cluster (STRICT_DNS) its endpoints inline.
 */
export function localityPriorities(dump: unknown, clusterName: string): { type: string; priorities: number[] } | undefined {
  const cluster = dumpOf(dump, 'ClustersConfigDump')
    .flatMap((c) => (c.dynamic_active_clusters ?? []).map((a: Json) => a.cluster as Json))
    .find((c) => c?.name === clusterName);
  if (cluster === undefined) return undefined;
  const assignment =
    dumpOf(dump, 'EndpointsConfigDump')
      .flatMap((e) => [...(e.dynamic_endpoint_configs ?? []), ...(e.static_endpoint_configs ?? [])].map((d: Json) => d.endpoint_config as Json))
      .find((e) => e?.cluster_name === clusterName) ?? cluster.load_assignment;
  // proto3 JSON leaves out defaults: STATIC and priority 0. A cluster extension (Envoy's newer DNS cluster) names itself in cluster_type.
  return { type: String(cluster.type ?? cluster.cluster_type?.name ?? 'STATIC'), priorities: (assignment?.endpoints ?? []).map((e: Json) => Number(e.priority ?? 0)) };
}
