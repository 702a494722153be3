// What failover Envoy Gateway v1.9 can deliver for a route, from its shape
// (facts verified with `egctl x translate`, see README "Failover per route shape"):
// - backendRefs without filters collapse into ONE cluster with Maglev: an
//   outlier-ejected host leaves the table and its keys move to the next cluster;
// - backendRefs with their own filters become weighted_clusters with
//   use_hash_policy: the hash picks the cluster before any health check, so a
//   down cluster keeps its keys and every request hashed to it fails with 503
//   (retries stay inside it; seen through a real Envoy, test/dataplane.int.test.ts);
// - a per-backendRef URLRewrite *path* rewrite is rejected by Envoy Gateway
//   (ResolvedRefs=False, requests get 500).
import { affinityType } from './affinity.ts';
import { MODEL_HEADER, inferencePoolMessage, inferencePoolRules, isAiGatewayGenerated, modelHeaderValue, parentGateways, ruleModel, rulesOf, steeredModels } from './ai-gateway.ts';
import { type GatewayRef, gatewayHasherName } from './gateway-hasher.ts';
import { EventReasons, type Reason, Reasons } from './conditions.ts';
import type { KubeObject, ModelService } from './model-service.ts';
import { CROSSPLANE_COMPOSITE_LABEL, MODEL_SERVICE_LABEL, labelValue } from './naming.ts';

export type RouteShape = 'OneCluster' | 'ClusterPerBackendRef' | 'Rejected';

interface BackendRef {
  filters?: { type?: string; urlRewrite?: { path?: unknown } }[];
}
interface HTTPRouteSpec {
  rules?: { backendRefs?: BackendRef[] }[];
}

export function routeShape(route: KubeObject): RouteShape {
  const refs = ((route.spec as HTTPRouteSpec | undefined)?.rules ?? []).flatMap((r) => r.backendRefs ?? []);
  if (refs.some((ref) => (ref.filters ?? []).some((f) => f.type === 'URLRewrite' && f.urlRewrite?.path !== undefined))) return 'Rejected';
  if (refs.some((ref) => (ref.filters ?? []).length > 0)) return 'ClusterPerBackendRef';
  return 'OneCluster';
}

/** The HTTPRoutes our policies' targetSelectors select (same namespace, either label). */
export function selectedRoutes(ms: ModelService, routes: readonly KubeObject[]): KubeObject[] {
  const value = labelValue(ms.metadata.name ?? '');
  return routes.filter(
    (r) =>
      r.metadata.namespace === ms.metadata.namespace &&
      (r.metadata.labels?.[CROSSPLANE_COMPOSITE_LABEL] === value || r.metadata.labels?.[MODEL_SERVICE_LABEL] === value),
  );
}

/** What the route's shape does to affinity and to fallback: NextEndpoint, when it limits them (undefined: nothing). */
function shapeWarning(ms: ModelService, route: KubeObject): string | undefined {
  const name = `${route.metadata.namespace}/${route.metadata.name}`;
  const shape = routeShape(route);
  if (shape === 'Rejected') {
    return (
      `route ${name} has per-backendRef URLRewrite path rewrites, which Envoy Gateway v1.9 rejects (ResolvedRefs=False; requests get 500): ` +
      'affinity cannot take effect until the path rewrite moves to a rule-level filter'
    );
  }
  if (shape === 'ClusterPerBackendRef' && ms.spec?.affinity?.fallback === 'NextEndpoint') {
    return (
      `spec.affinity.fallback: NextEndpoint is limited on route ${name}: its backendRefs carry their own filters, so each is its own ` +
      'Envoy cluster and the hash picks the cluster before any health check (weighted_clusters). When a cluster is down, every ' +
      'request hashed to it fails with 503: retries stay inside that cluster and outlier detection cannot move its keys; the other ' +
      "clusters' keys are unaffected. Move the filters to the rule (per-cluster Host: Backends with hostname and an HTTPRouteFilter " +
      'hostname type Backend) to get failover'
    );
  }
  return undefined;
}

/** Warnings about what the selected routes' shapes do to affinity and to fallback: NextEndpoint. */
export function routeShapeWarnings(ms: ModelService, routes: readonly KubeObject[]): string[] {
  if (affinityType(ms) === 'None') return [];
  return selectedRoutes(ms, routes).flatMap((route) => shapeWarning(ms, route) ?? []);
}

/** The routes the discovery reads: HTTPRoutes and AIGatewayRoutes of every namespace. */
export interface RouteView {
  httpRoutes: readonly KubeObject[];
  /** `[]` when the cluster does not serve the kind; undefined while it is not known (its informer has not listed). */
  aiGatewayRoutes: readonly KubeObject[] | undefined;
}

/** How much of the affinity a route found gets. */
export type FindingLevel = 'attached' | 'limited' | 'notApplied';

/** One route found for a ModelService, and what attaches there: an Event each, and the condition's reason and message. */
export interface RouteFinding {
  /** `Kind namespace/name`. */
  route: string;
  level: FindingLevel;
  reason: Reason | (typeof EventReasons)['RouteAttached'];
  message: string;
}

/** Policies to create in another namespace, targeting these HTTPRoutes (generated from AIGatewayRoutes) by name. */
export interface CrossNamespaceTarget {
  namespace: string;
  httpRoutes: string[];
}

/** A model an AIGatewayRoute found for the ModelService routes on a Gateway: the Gateway's hasher keys its requests under PrefixHash. */
export interface GatewayModel {
  gateway: GatewayRef;
  /** The x-ai-eg-model value. */
  model: string;
}

export interface RouteDiscovery {
  findings: RouteFinding[];
  /** Sorted by Gateway, then model. */
  gatewayModels: GatewayModel[];
  /** Sorted by namespace, route names sorted. */
  targets: CrossNamespaceTarget[];
  /** False while AIGatewayRoutes are not known: what belongs in other namespaces cannot be decided yet. */
  complete: boolean;
}

const ONE_CLUSTER_PER_RULE = "each rule's backends are one Envoy cluster (Maglev; backend priorities keep priority failover)";

const byName = (a: KubeObject, b: KubeObject) =>
  `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`);

/** An HTTPRoute our targetSelectors select: hand-labelled, composed by Crossplane, or generated by AI Gateway (labels copied). */
function httpRouteFindings(ms: ModelService, route: KubeObject): RouteFinding[] {
  const where = `${route.metadata.namespace}/${route.metadata.name}`;
  const id = `HTTPRoute ${where}`;
  const warning = shapeWarning(ms, route);
  if (warning !== undefined) return [{ route: id, level: 'limited', reason: Reasons.FailoverLimited, message: warning }];
  if (!isAiGatewayGenerated(route)) {
    const shape = routeShape(route) === 'OneCluster' ? 'its backendRefs are one Envoy cluster (Maglev)' : 'each backendRef is its own Envoy cluster, picked by the hash (weighted_clusters)';
    return [{ route: id, level: 'attached', reason: EventReasons.RouteAttached, message: `${id}: selected by the policies' targetSelectors; ${shape}` }];
  }
  // Generated from the AIGatewayRoute of the same name and namespace, rule for rule.
  return aiGatewayRuleFindings(id, where, rulesOf(route), `${id}, generated from AIGatewayRoute ${where}: selected by the policies' targetSelectors (labels copied); ${ONE_CLUSTER_PER_RULE}${gatewayHasherNote(ms, route)}`);
}

/** Under PrefixHash, which hasher keys an AIGatewayRoute's requests: its Gateways' (src/gateway-hasher.ts). */
function gatewayHasherNote(ms: ModelService, route: KubeObject): string {
  const gateways = parentGateways(route);
  if (affinityType(ms) !== 'PrefixHash' || gateways.length === 0) return '';
  const hashers = gateways.map((g) => `${g.namespace}/${gatewayHasherName(g)} (Gateway ${g.name})`).join(', ');
  return `; PrefixHash keys are set by the Gateway hasher ${hashers}, whose EnvoyExtensionPolicy targets the Gateway because a route-level one runs only when its route is a request's first match`;
}

/** InferencePool rules are not affinity's to steer; the rest of the route is attached (`attached` message), when any rest is left. */
function aiGatewayRuleFindings(id: string, aiGatewayRoute: string, rules: ReturnType<typeof rulesOf>, attached: string): RouteFinding[] {
  const pools = inferencePoolRules(rules);
  const findings: RouteFinding[] = pools.map((p) => ({ route: id, level: 'notApplied', reason: Reasons.InferencePoolBackend, message: inferencePoolMessage(aiGatewayRoute, p) }));
  const steered = rules.some((r, i) => (r.backendRefs ?? []).length > 0 && !pools.some((p) => p.rule === i));
  if (steered) findings.unshift({ route: id, level: 'attached', reason: EventReasons.RouteAttached, message: attached });
  return findings;
}

/**
 * Which routes a ModelService's affinity attaches to, beside the label
 * selectors: HTTPRoutes of its namespace that carry its label (AI Gateway's
 * generated ones included), and AIGatewayRoutes of other namespaces whose
 * every rule matches x-ai-eg-model exactly `<namespace>/<name>` (Modelplane's
 * shape: one route per model). A route that also carries other traffic is
 * reported, not attached: a policy on it would hash that traffic too.
 */
export function discoverRoutes(ms: ModelService, view: RouteView): RouteDiscovery {
  if (affinityType(ms) === 'None') return { findings: [], gatewayModels: [], targets: [], complete: true };
  const namespace = ms.metadata.namespace;
  const selected = selectedRoutes(ms, [...view.httpRoutes].sort(byName));
  const findings = selected.flatMap((r) => httpRouteFindings(ms, r));
  const gatewayModels: GatewayModel[] = selected.filter(isAiGatewayGenerated).flatMap((r) => parentGateways(r).flatMap((gateway) => steeredModels(r).map((m) => ({ gateway, model: m }))));
  const model = modelHeaderValue(ms);
  const targets = new Map<string, string[]>();
  for (const route of [...(view.aiGatewayRoutes ?? [])].sort(byName)) {
    const rules = rulesOf(route);
    const ours = rules.map((r) => ruleModel(r) === model);
    if (!ours.includes(true)) continue;
    const where = `${route.metadata.namespace}/${route.metadata.name}`;
    const id = `AIGatewayRoute ${where}`;
    if (route.metadata.namespace === namespace) {
      // Labelled, it passes the label to its HTTPRoute, which is reported above once AI Gateway has generated it.
      if (selectedRoutes(ms, [route]).length === 0) {
        findings.push({
          route: id,
          level: 'notApplied',
          reason: Reasons.RouteNotSelected,
          message:
            `${id} routes ${MODEL_HEADER} ${model} but carries neither ${MODEL_SERVICE_LABEL} nor ${CROSSPLANE_COMPOSITE_LABEL}: ${labelValue(ms.metadata.name ?? '')}, ` +
            'so the policies do not select its HTTPRoute; add the label to the AIGatewayRoute (AI Gateway copies it to the HTTPRoute)',
        });
      }
      continue;
    }
    const others = ours.flatMap((mine, i) => (mine ? [] : [i]));
    if (others.length > 0) {
      findings.push({
        route: id,
        level: 'notApplied',
        reason: Reasons.RouteShared,
        message:
          `${id} routes ${MODEL_HEADER} ${model}, but its rule${others.length > 1 ? 's' : ''} ${others.join(', ')} route other traffic: a policy on its HTTPRoute ` +
          `would hash that traffic too, so nothing is attached to it; route ${model} in an AIGatewayRoute of its own`,
      });
      continue;
    }
    const found = aiGatewayRuleFindings(
      id,
      where,
      rules,
      `${id} routes ${MODEL_HEADER} ${model}: the BackendTrafficPolicy in namespace ${route.metadata.namespace} targets its HTTPRoute ${where} by name; ${ONE_CLUSTER_PER_RULE}${gatewayHasherNote(ms, route)}`,
    );
    findings.push(...found);
    if (found.some((f) => f.level === 'attached')) {
      const ns = route.metadata.namespace ?? '';
      targets.set(ns, [...(targets.get(ns) ?? []), route.metadata.name ?? '']);
      gatewayModels.push(...parentGateways(route).map((gateway) => ({ gateway, model })));
    }
  }
  const gatewayKey = (g: GatewayModel) => `${g.gateway.namespace}/${g.gateway.name}\u0000${g.model}`;
  return {
    findings,
    gatewayModels: [...new Map(gatewayModels.map((g) => [gatewayKey(g), g]))].sort(([a], [b]) => a.localeCompare(b)).map(([, g]) => g),
    targets: [...targets].sort(([a], [b]) => a.localeCompare(b)).map(([ns, httpRoutes]) => ({ namespace: ns, httpRoutes: httpRoutes.sort() })),
    complete: view.aiGatewayRoutes !== undefined,
  };
}
