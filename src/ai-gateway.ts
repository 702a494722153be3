// What an Envoy AI Gateway AIGatewayRoute (v1.0.0) means for a ModelService,
// read from the route alone (pure). Facts from AI Gateway's controller
// (tools/aigateway/RECIPE.md §5, §7):
// - it generates an HTTPRoute of the same name and namespace, labels copied,
//   annotated `gateway.envoyproxy.io/ai-gateway-generated: "true"`, one rule
//   per AIGatewayRoute rule in the same order (then a catch-all
//   `route-not-found` rule), with no per-backendRef filters: a rule's
//   backends are one Envoy cluster (Maglev under our policy, backend
//   priorities as locality priorities);
// - a rule whose backendRef is an InferencePool gets an ORIGINAL_DST cluster
//   whose load-balancing policy AI Gateway removes: the pool's endpoint
//   picker chooses the endpoint, and no consistent hash applies there.
import type { GatewayRef } from './gateway-hasher.ts';
import type { KubeObject, ModelService } from './model-service.ts';

export const AI_GATEWAY_GROUP = 'aigateway.envoyproxy.io';
/** v1.0.0 serves v1alpha1 (deprecated, with a warning on every request) and v1beta1 (stored). */
export const AI_GATEWAY_API_VERSION = `${AI_GATEWAY_GROUP}/v1beta1`;
export const AI_GATEWAY_ROUTE_KIND = 'AIGatewayRoute';
export const AI_GATEWAY_ROUTE_PLURAL = 'aigatewayroutes';
/** On the HTTPRoute AI Gateway's controller generates from an AIGatewayRoute. */
export const AI_GATEWAY_GENERATED_ANNOTATION = 'gateway.envoyproxy.io/ai-gateway-generated';
/** The header AI Gateway's router-level ext_proc sets from the request body's model. */
export const MODEL_HEADER = 'x-ai-eg-model';
export const INFERENCE_POOL_GROUP = 'inference.networking.k8s.io';
export const INFERENCE_POOL_KIND = 'InferencePool';

interface HeaderMatch {
  name?: string;
  type?: string;
  value?: string;
}
interface BackendRef {
  group?: string;
  kind?: string;
  name?: string;
}
/** The part of a rule both an AIGatewayRoute and its generated HTTPRoute have. */
interface Rule {
  matches?: { headers?: HeaderMatch[] }[];
  backendRefs?: BackendRef[];
}

export function rulesOf(route: KubeObject): Rule[] {
  const rules = (route.spec as { rules?: unknown } | undefined)?.rules;
  return Array.isArray(rules) ? (rules as Rule[]) : [];
}

/** `<namespace>/<name>`: the model name Modelplane routes a ModelService by (PR #425). */
export function modelHeaderValue(ms: ModelService): string {
  return `${ms.metadata.namespace ?? ''}/${ms.metadata.name ?? ''}`;
}

/** The value a match requires of x-ai-eg-model exactly (type Exact is the default), or undefined. */
function exactModel(match: { headers?: HeaderMatch[] }): string | undefined {
  const header = (match.headers ?? []).find((h) => h.name?.toLowerCase() === MODEL_HEADER);
  return header && (header.type ?? 'Exact') === 'Exact' ? header.value : undefined;
}

/**
 * The model a rule routes, when every one of its matches requires the same
 * exact x-ai-eg-model; undefined for a rule that also takes other traffic
 * (no matches, a match without the header, a regular expression, two models).
 */
export function ruleModel(rule: Rule): string | undefined {
  const models = new Set((rule.matches ?? []).map(exactModel));
  const [only] = models;
  return models.size === 1 ? only : undefined;
}

/** Every model some rule of the route names exactly (to find the ModelServices a route change concerns). */
export function modelsNamed(route: KubeObject): string[] {
  return [...new Set(rulesOf(route).flatMap((r) => (r.matches ?? []).map(exactModel)).filter((m) => m !== undefined))];
}

export function isAiGatewayGenerated(route: KubeObject): boolean {
  return route.metadata.annotations?.[AI_GATEWAY_GENERATED_ANNOTATION] === 'true';
}

export interface InferencePoolRule {
  /** Index of the rule, the same in the AIGatewayRoute and its HTTPRoute. */
  rule: number;
  pool: string;
}

/** Rules whose backend is an InferencePool (AI Gateway allows one per rule, alone). */
export function inferencePoolRules(rules: readonly Rule[]): InferencePoolRule[] {
  return rules.flatMap((rule, index) =>
    (rule.backendRefs ?? [])
      .filter((ref) => ref.group === INFERENCE_POOL_GROUP && ref.kind === INFERENCE_POOL_KIND)
      .map((ref) => ({ rule: index, pool: ref.name ?? '' })),
  );
}

/** What the condition says of such a rule: where, why affinity cannot apply, and who chooses instead. */
export function inferencePoolMessage(aiGatewayRoute: string, { rule, pool }: InferencePoolRule): string {
  return (
    `rule ${rule} of AIGatewayRoute ${aiGatewayRoute} routes to InferencePool ${pool}: AI Gateway makes its cluster ORIGINAL_DST ` +
    'and routes to the endpoint its endpoint picker names, replacing the load-balancing policy, so cluster affinity cannot apply ' +
    'there; the endpoint picker chooses the replica'
  );
}

/** The Gateways a route attaches to (its parentRefs of kind Gateway; the namespace defaults to the route's), sorted. */
export function parentGateways(route: KubeObject): GatewayRef[] {
  const refs = (route.spec as { parentRefs?: unknown } | undefined)?.parentRefs;
  if (!Array.isArray(refs)) return [];
  const gateways = new Map<string, GatewayRef>();
  for (const ref of refs as { group?: string; kind?: string; name?: string; namespace?: string }[]) {
    if ((ref.kind ?? 'Gateway') !== 'Gateway' || (ref.group ?? 'gateway.networking.k8s.io') !== 'gateway.networking.k8s.io' || !ref.name) continue;
    const gateway = { namespace: ref.namespace ?? route.metadata.namespace ?? 'default', name: ref.name };
    gateways.set(`${gateway.namespace}/${gateway.name}`, gateway);
  }
  return [...gateways].sort(([a], [b]) => a.localeCompare(b)).map(([, g]) => g);
}

/** The models of a route's rules that affinity steers: each rule's exact x-ai-eg-model, InferencePool rules left out. */
export function steeredModels(route: KubeObject): string[] {
  const rules = rulesOf(route);
  const pools = new Set(inferencePoolRules(rules).map((p) => p.rule));
  const models = rules.flatMap((rule, i) => {
    const model = ruleModel(rule);
    return pools.has(i) || model === undefined ? [] : [model];
  });
  return [...new Set(models)].sort();
}
