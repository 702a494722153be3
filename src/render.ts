// ModelService in, Envoy Gateway objects out (SPEC §3). Pure: the reconciler
// applies exactly this list, and `modelplane-affinity render` prints it.
import { type ValidationResult, PROMPT_HASH_HEADER, affinityType, validate } from './affinity.ts';
import { mutateModelService } from './admission.ts';
import type { FieldError } from './field-errors.ts';
import {
  type KubeObject,
  MODEL_SERVICE_API_VERSION,
  MODEL_SERVICE_KIND,
  type ModelService,
  type OwnerReference,
} from './model-service.ts';
import type { CrossNamespaceTarget } from './route-shape.ts';
import { GATEWAY_LABEL, type GatewayRef, type ModelKeySettings, formatModelFlag, gatewayHasherName, gatewayLabelValue } from './gateway-hasher.ts';
import {
  CROSSPLANE_COMPOSITE_LABEL,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  MODEL_SERVICE_LABEL,
  crossNamespaceLabels,
  crossNamespaceNames,
  generatedNames,
  labelValue,
  ownershipLabels,
} from './naming.ts';

export const EXT_PROC_PORT = 9002;
export const EXT_PROC_METRICS_PORT = 9090;
export const EXT_PROC_REPLICAS = 2;
export const DEFAULT_EXT_PROC_IMAGE = 'ghcr.io/modelplane/modelplane-affinity:0.1.0';
export const GATEWAY_API_GROUP = 'gateway.networking.k8s.io';
export const ENVOY_GATEWAY_GROUP = 'gateway.envoyproxy.io';
export const ENVOY_GATEWAY_API_VERSION = `${ENVOY_GATEWAY_GROUP}/v1alpha1`;

/** Kinds the reconciler owns, in apply order (the ext_proc Service exists before the policy that points at it). */
export const GENERATED_KINDS = [
  { apiVersion: 'v1', kind: 'Service', plural: 'services' },
  { apiVersion: 'apps/v1', kind: 'Deployment', plural: 'deployments' },
  { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', plural: 'poddisruptionbudgets' },
  { apiVersion: ENVOY_GATEWAY_API_VERSION, kind: 'EnvoyExtensionPolicy', plural: 'envoyextensionpolicies' },
  { apiVersion: ENVOY_GATEWAY_API_VERSION, kind: 'BackendTrafficPolicy', plural: 'backendtrafficpolicies' },
] as const;

/** How rendered objects are printed as YAML: maps the objects share are written out, not as anchors; no line folding. */
export const MANIFEST_YAML_OPTIONS = { lineWidth: 0, aliasDuplicateObjects: false } as const;

/** Each generated kind as kubectl and RBAC name it: `plural.group` (`services` for the core group). */
export const GENERATED_RESOURCES: readonly string[] = GENERATED_KINDS.map(({ apiVersion, plural }) =>
  apiVersion.includes('/') ? `${plural}.${apiVersion.split('/')[0]}` : plural,
);

export interface RenderOptions {
  /** Image that runs `modelplane-affinity ext-proc` (the add-on's own image). */
  extProcImage: string;
}

function ownerReference(ms: ModelService): OwnerReference[] {
  const { name, uid } = ms.metadata;
  if (uid === undefined || name === undefined) return [];
  return [{ apiVersion: MODEL_SERVICE_API_VERSION, kind: MODEL_SERVICE_KIND, name, uid, controller: true, blockOwnerDeletion: true }];
}

function metadata(ms: ModelService, name: string, extraLabels: Record<string, string> = {}): KubeObject['metadata'] {
  const owners = ownerReference(ms);
  return {
    name,
    namespace: ms.metadata.namespace ?? 'default',
    labels: { ...ownershipLabels(ms.metadata.name ?? ''), ...extraLabels },
    ...(owners.length > 0 ? { ownerReferences: owners } : {}),
  };
}

/** The HTTPRoutes of this ModelService: the one Modelplane composes, or one a user labels by hand. */
export function routeSelectors(modelServiceName: string): Record<string, unknown>[] {
  const value = labelValue(modelServiceName);
  return [CROSSPLANE_COMPOSITE_LABEL, MODEL_SERVICE_LABEL].map((label) => ({
    group: GATEWAY_API_GROUP,
    kind: 'HTTPRoute',
    matchLabels: { [label]: value },
  }));
}

/** The request header whose value the gateway hashes. */
export function hashHeader(ms: ModelService): string | undefined {
  switch (affinityType(ms)) {
    case 'PrefixHash':
      return PROMPT_HASH_HEADER;
    case 'Session':
      return ms.spec?.affinity?.sessionHeader;
    case 'None':
      return undefined;
  }
}

/**
 * NextEndpoint: passive health checking ejects a failing cluster's hosts, and
 * a retry on connect-failure/reset re-sends the request that found it down
 * (Envoy Gateway adds the previous_hosts predicate, so the retry goes to
 * another host). At most half the hosts are ejected: with Envoy's default 50%
 * panic threshold the remaining clusters keep the moved keys instead of the
 * whole ring falling into panic. Keys move only when the route's backendRefs
 * share one Maglev cluster (see src/route-shape.ts).
 */
function fallbackSettings(ms: ModelService): Record<string, unknown> {
  if (ms.spec?.affinity?.fallback !== 'NextEndpoint') return {};
  return {
    healthCheck: {
      passive: {
        splitExternalLocalOriginErrors: true,
        consecutiveLocalOriginFailures: 3,
        consecutiveGatewayErrors: 3,
        consecutive5XxErrors: 5,
        interval: '5s',
        baseEjectionTime: '30s',
        maxEjectionPercent: 50,
      },
    },
    retry: {
      numRetries: 2,
      retryOn: { triggers: ['connect-failure', 'reset'] },
      perRetry: { backOff: { baseInterval: '100ms', maxInterval: '1s' } },
    },
  };
}

/** How a policy finds its HTTPRoutes: by label in the ModelService's namespace, by name in a route's. */
type Targets = { targetSelectors: Record<string, unknown>[] } | { targetRefs: Record<string, unknown>[] };

function selectorTargets(ms: ModelService): Targets {
  return { targetSelectors: routeSelectors(ms.metadata.name ?? '') };
}

function backendTrafficPolicy(ms: ModelService, header: string, meta: KubeObject['metadata'], targets: Targets): KubeObject {
  return {
    apiVersion: ENVOY_GATEWAY_API_VERSION,
    kind: 'BackendTrafficPolicy',
    metadata: meta,
    spec: {
      ...targets,
      loadBalancer: { type: 'ConsistentHash', consistentHash: { type: 'Headers', headers: [{ name: header }] } },
      ...fallbackSettings(ms),
    },
  };
}

const EXT_PROC_APP = 'modelplane-affinity-ext-proc';

/**
 * The hasher's policy, Deployment, Service and PodDisruptionBudget share one
 * name; the last three one pod selector. A ModelService's hasher (its
 * prefixBytes and prefixKey) or a Gateway's (one --model per model,
 * src/gateway-hasher.ts).
 */
interface Hasher {
  name: string;
  selector: Record<string, string>;
  /** The metadata of each of its objects (namespace, labels, owners) with these labels added. */
  metadata: (extraLabels: Record<string, string>) => KubeObject['metadata'];
  /** Labels of its pods beside the selector. */
  podLabels: Record<string, string>;
  /** How it keys requests: the ext-proc flags. */
  keyArgs: string[];
}

function hasherSelector(name: string): Record<string, string> {
  return { 'app.kubernetes.io/name': EXT_PROC_APP, 'app.kubernetes.io/instance': name };
}

function hasherOf(ms: ModelService): Hasher {
  const name = generatedNames(ms.metadata.name ?? '').prefixHash;
  const { prefixBytes, prefixKey } = ms.spec?.affinity ?? {};
  return {
    name,
    selector: hasherSelector(name),
    metadata: (extraLabels) => metadata(ms, name, extraLabels),
    podLabels: ownershipLabels(ms.metadata.name ?? ''),
    keyArgs: ['--prefix-bytes', String(prefixBytes), '--prefix-key', String(prefixKey)],
  };
}

/** The Gateway-level hasher: labelled for its Gateway, no owner (the ModelServices it serves share it). */
function gatewayHasherOf(gateway: GatewayRef, models: readonly ModelKeySettings[]): Hasher {
  const name = gatewayHasherName(gateway);
  const labels = { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [GATEWAY_LABEL]: gatewayLabelValue(gateway) };
  return {
    name,
    selector: hasherSelector(name),
    metadata: (extraLabels) => ({ name, namespace: gateway.namespace, labels: { ...labels, ...extraLabels } }),
    podLabels: labels,
    keyArgs: [...models].sort((a, b) => a.model.localeCompare(b.model)).flatMap((m) => ['--model', formatModelFlag(m)]),
  };
}

function envoyExtensionPolicy(hasher: Hasher, meta: KubeObject['metadata'], targets: Targets): KubeObject {
  return {
    apiVersion: ENVOY_GATEWAY_API_VERSION,
    kind: 'EnvoyExtensionPolicy',
    metadata: meta,
    spec: {
      ...targets,
      extProc: [
        {
          backendRefs: [{ group: '', kind: 'Service', name: hasher.name, port: EXT_PROC_PORT }],
          processingMode: { request: { body: 'BufferedPartial' } },
          // Envoy's default budget per message; in BufferedPartial mode it holds the headers until our answer.
          messageTimeout: '200ms',
          // A hasher outage costs locality, never availability.
          failOpen: true,
        },
      ],
    },
  };
}

function extProcService({ selector, metadata: meta }: Hasher): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(selector),
    spec: {
      type: 'ClusterIP',
      selector,
      // Envoy Gateway dials ext_proc backends with HTTP/2 cleartext (gRPC).
      ports: [{ name: 'grpc', port: EXT_PROC_PORT, targetPort: 'grpc', protocol: 'TCP', appProtocol: 'kubernetes.io/h2c' }],
    },
  };
}

/**
 * Runtime settings for the hasher's container (limit 256Mi, one CPU).
 *
 * V8's young generation: Node 24 grows it to 64 MB under load, and at 4 KiB
 * saturation the hasher then peaked at 280 MiB RSS, over the memory limit
 * (an OOM kill under load). With 2 MB semi-spaces it peaks at 161-179 MiB
 * and each scavenge pauses about 1 ms instead of 10-25 ms. Those pauses are
 * the p99: 8 MB semi-spaces saved 3-10% CPU per request but doubled the p99
 * at half load, to about 2 ms (bench/RESULTS.md).
 *
 * glibc malloc: every request brings a body of up to 32 KiB that is read,
 * hashed and freed at once; with glibc's defaults the freed memory goes back
 * to the kernel and is faulted in again on the next read (page faults and
 * memmove were the top of a CPU profile at 32 KiB). Keeping up to 64 MiB of
 * freed heap, and serving blocks below 4 MiB from the heap rather than mmap,
 * cut the CPU per 32 KiB request by about a quarter.
 */
export const EXT_PROC_ENV: readonly { name: string; value: string }[] = [
  { name: 'NODE_OPTIONS', value: '--max-semi-space-size=2' },
  { name: 'MALLOC_MMAP_THRESHOLD_', value: String(4 * 1024 * 1024) },
  { name: 'MALLOC_TRIM_THRESHOLD_', value: String(64 * 1024 * 1024) },
];

function extProcDeployment({ selector, metadata: meta, podLabels, keyArgs }: Hasher, options: RenderOptions): KubeObject {
  const grpcProbe = { grpc: { port: EXT_PROC_PORT } };
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(selector),
    spec: {
      replicas: EXT_PROC_REPLICAS,
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: { ...podLabels, ...selector } },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: { type: 'RuntimeDefault' } },
          topologySpreadConstraints: [
            { maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: selector } },
          ],
          containers: [
            {
              name: 'ext-proc',
              image: options.extProcImage,
              args: ['ext-proc', '--port', String(EXT_PROC_PORT), ...keyArgs, '--metrics-port', String(EXT_PROC_METRICS_PORT)],
              env: EXT_PROC_ENV.map((e) => ({ ...e })),
              ports: [
                { name: 'grpc', containerPort: EXT_PROC_PORT, protocol: 'TCP' },
                { name: 'metrics', containerPort: EXT_PROC_METRICS_PORT, protocol: 'TCP' },
              ],
              readinessProbe: { ...grpcProbe, periodSeconds: 5 },
              livenessProbe: { ...grpcProbe, periodSeconds: 10, failureThreshold: 3 },
              resources: { requests: { cpu: '100m', memory: '64Mi' }, limits: { cpu: '1', memory: '256Mi' } },
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
              // The hasher drains as soon as SIGTERM arrives; give Envoy time to see the endpoint go first.
              lifecycle: { preStop: { exec: { command: ['sleep', '5'] } } },
            },
          ],
          // Longer than the hasher's drain on SIGTERM, so open streams finish.
          terminationGracePeriodSeconds: 30,
        },
      },
    },
  };
}

function extProcPodDisruptionBudget({ selector, metadata: meta }: Hasher): KubeObject {
  return {
    apiVersion: 'policy/v1',
    kind: 'PodDisruptionBudget',
    metadata: meta(selector),
    spec: { minAvailable: 1, selector: { matchLabels: selector } },
  };
}

const KIND_ORDER: string[] = GENERATED_KINDS.map((k) => k.kind);

/** Sorted by kind (apply order), namespace, then name, so output never reorders by accident. */
export function sortObjects(objects: KubeObject[]): KubeObject[] {
  return [...objects].sort(
    (a, b) =>
      KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) ||
      String(a.metadata.namespace).localeCompare(String(b.metadata.namespace)) ||
      String(a.metadata.name).localeCompare(String(b.metadata.name)),
  );
}

/** The objects a defaulted, valid ModelService needs. None → nothing (earlier objects are pruned). */
export function desiredObjects(ms: ModelService, options: RenderOptions): KubeObject[] {
  const header = hashHeader(ms);
  if (header === undefined) return [];
  const name = ms.metadata.name ?? '';
  const objects = [backendTrafficPolicy(ms, header, metadata(ms, generatedNames(name).backendTrafficPolicy), selectorTargets(ms))];
  if (affinityType(ms) === 'PrefixHash') {
    objects.push(...hasherObjects(hasherOf(ms), selectorTargets(ms), options));
  }
  return sortObjects(objects);
}

/** A hasher's EnvoyExtensionPolicy (on these targets), Service, Deployment and PodDisruptionBudget. */
function hasherObjects(hasher: Hasher, targets: Targets, options: RenderOptions): KubeObject[] {
  return [envoyExtensionPolicy(hasher, hasher.metadata({}), targets), extProcService(hasher), extProcDeployment(hasher, options), extProcPodDisruptionBudget(hasher)];
}

/**
 * A Gateway's hasher (src/gateway-hasher.ts), in the Gateway's namespace, its
 * EnvoyExtensionPolicy targeting the Gateway: Envoy Gateway enables its filter
 * on every route of the Gateway that has no route-level EnvoyExtensionPolicy,
 * whichever route a request first matches. Nothing when no model needs it.
 */
export function gatewayHasherObjects(gateway: GatewayRef, models: readonly ModelKeySettings[], options: RenderOptions): KubeObject[] {
  if (models.length === 0) return [];
  const targets: Targets = { targetRefs: [{ group: GATEWAY_API_GROUP, kind: 'Gateway', name: gateway.name }] };
  return sortObjects(hasherObjects(gatewayHasherOf(gateway, models), targets, options));
}

/**
 * The objects for AIGatewayRoutes in other namespaces (src/route-shape.ts
 * `discoverRoutes`): policies must live in their target's namespace, so each
 * such namespace gets the BackendTrafficPolicy targeting the generated
 * HTTPRoutes by name. It cannot have an ownerReference across namespaces:
 * its labels name the ModelService instead. PrefixHash needs no hasher of
 * its own there: the Gateway's hasher (gatewayHasherObjects) keys its
 * requests, because a route-level one would run only when its route is the
 * first match (README "Envoy AI Gateway").
 */
export function crossNamespaceObjects(ms: ModelService, targets: readonly CrossNamespaceTarget[]): KubeObject[] {
  const header = hashHeader(ms);
  const namespace = ms.metadata.namespace ?? 'default';
  const elsewhere = targets.filter((t) => t.namespace !== namespace && t.httpRoutes.length > 0);
  if (header === undefined || elsewhere.length === 0) return [];
  const name = ms.metadata.name ?? '';
  const names = crossNamespaceNames(namespace, name);
  return sortObjects(
    elsewhere.map((target) =>
      backendTrafficPolicy(
        ms,
        header,
        { name: names.backendTrafficPolicy, namespace: target.namespace, labels: crossNamespaceLabels(namespace, name) },
        { targetRefs: target.httpRoutes.map((route) => ({ group: GATEWAY_API_GROUP, kind: 'HTTPRoute', name: route })) },
      ),
    ),
  );
}

export interface RenderResult {
  /** The defaulted ModelService as the mutating webhook stores it (defaults and annotations): what `render` prints. */
  modelService: ModelService;
  objects: KubeObject[];
  warnings: string[];
  errors: FieldError[];
}

/** Defaults, validates, and renders: the one path from a ModelService to gateway objects. */
export function render(ms: ModelService, options: RenderOptions): RenderResult {
  const modelService = mutateModelService(ms);
  const { errors, warnings }: ValidationResult = validate(modelService);
  return { modelService, objects: errors.length === 0 ? desiredObjects(modelService, options) : [], warnings, errors };
}
