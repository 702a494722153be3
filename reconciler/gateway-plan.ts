// What the Gateway hashers should be, decided without I/O (like plan.ts for
// one ModelService): from every ModelService and route, the models each
// Gateway's hasher keys (src/gateway-hasher.ts), the objects to apply, those
// to prune, and the names someone else holds. The controller hands it to the
// writer. One pass covers every Gateway: the hashers are shared by the
// ModelServices of many namespaces, so no single ModelService decides them.
import { mutateModelService } from '../src/admission.ts';
import { isAiGatewayGenerated } from '../src/ai-gateway.ts';
import { affinityType, validate } from '../src/affinity.ts';
import { type GatewayRef, GATEWAY_LABEL, type ModelKeySettings, gatewayLabelValue } from '../src/gateway-hasher.ts';
import type { KubeObject, ModelService } from '../src/model-service.ts';
import { GATEWAY_HASHER_INDEX, isGatewayHasherObject, isUpToDate, objectKey } from '../src/ownership.ts';
import { type RenderOptions, gatewayHasherObjects, sortObjects } from '../src/render.ts';
import { type RouteView, discoverRoutes } from '../src/route-shape.ts';
import type { PlanCache } from './plan.ts';

export interface GatewayHasher {
  gateway: GatewayRef;
  models: ModelKeySettings[];
}

export interface GatewayPlan {
  /** As in plan.ts: desired objects whose name is not known; look them up and plan again. */
  lookups: KubeObject[];
  apply: KubeObject[];
  /** Live Gateway hasher objects no longer needed. */
  prune: KubeObject[];
  /** `Kind namespace/name` held by someone else, left untouched. */
  conflicts: string[];
  /** What each Gateway's hasher keys, for the log. */
  hashers: GatewayHasher[];
}

const NOTHING: GatewayPlan = { lookups: [], apply: [], prune: [], conflicts: [], hashers: [] };

const modelServiceKey = (ms: ModelService) => `${ms.metadata.namespace ?? ''}/${ms.metadata.name ?? ''}`;

/**
 * The models each Gateway's hasher keys: every PrefixHash ModelService's
 * models on AIGatewayRoutes of that Gateway, with its defaulted prefixKey and
 * prefixBytes. A model two ModelServices claim keeps the first by
 * namespace/name. Undefined while AIGatewayRoutes are not known.
 */
export function gatewayHashers(modelServices: readonly ModelService[], routes: RouteView): GatewayHasher[] | undefined {
  if (routes.aiGatewayRoutes === undefined) return undefined;
  // Only AI Gateway's routes (and the HTTPRoutes it generates) lead to a Gateway hasher: without any, a
  // pass needs no look at the ModelServices, and any ModelService or route event queues one.
  if (routes.aiGatewayRoutes.length === 0 && !routes.httpRoutes.some(isAiGatewayGenerated)) return [];
  const byGateway = new Map<string, GatewayHasher>();
  for (const ms of [...modelServices].sort((a, b) => modelServiceKey(a).localeCompare(modelServiceKey(b)))) {
    if (ms.metadata.deletionTimestamp) continue;
    const defaulted = mutateModelService(ms);
    if (affinityType(defaulted) !== 'PrefixHash' || validate(defaulted).errors.length > 0) continue;
    const { prefixKey, prefixBytes } = defaulted.spec?.affinity ?? {};
    if (prefixKey === undefined || prefixBytes === undefined) continue;
    for (const { gateway, model } of discoverRoutes(defaulted, routes).gatewayModels) {
      const key = `${gateway.namespace}/${gateway.name}`;
      const hasher = byGateway.get(key) ?? { gateway, models: [] };
      byGateway.set(key, hasher);
      if (!hasher.models.some((m) => m.model === model)) hasher.models.push({ model, prefixKey, prefixBytes, modelService: modelServiceKey(ms) });
    }
  }
  return [...byGateway].sort(([a], [b]) => a.localeCompare(b)).map(([, h]) => h);
}

const isLabelledForGateway = (object: KubeObject, gateway: GatewayRef) =>
  isGatewayHasherObject(object) && object.metadata.namespace === gateway.namespace && object.metadata.labels?.[GATEWAY_LABEL] === gatewayLabelValue(gateway);

/** One pass over every Gateway hasher. `cache.labelledFor(GATEWAY_HASHER_INDEX)`: every live one. */
export function planGatewayHashers(modelServices: readonly ModelService[], cache: PlanCache, routes: RouteView, options: RenderOptions): GatewayPlan {
  const hashers = gatewayHashers(modelServices, routes);
  // While AIGatewayRoutes are not known, the hashers are left as they are.
  if (hashers === undefined) return NOTHING;
  const desired = hashers.flatMap((h) => gatewayHasherObjects(h.gateway, h.models, options).map((object) => ({ object, gateway: h.gateway })));
  const known = desired.map((d) => ({ ...d, live: cache.get(d.object.kind, d.object.metadata.namespace ?? '', d.object.metadata.name ?? '') }));
  const lookups = known.filter((k) => k.live === undefined).map((k) => k.object);
  if (lookups.length > 0) return { ...NOTHING, lookups, hashers };
  const ours = known.filter((k) => k.live === null || isLabelledForGateway(k.live as KubeObject, k.gateway));
  const conflicts = known.filter((k) => !ours.includes(k)).map((k) => `${k.object.kind} ${k.object.metadata.namespace}/${k.object.metadata.name}`);
  const apply = sortObjects(ours.filter((k) => !isUpToDate(k.object, k.live ?? undefined)).map((k) => k.object));
  const wanted = new Set(desired.map((d) => objectKey(d.object)));
  const prune = cache.labelledFor(GATEWAY_HASHER_INDEX).filter((o) => !wanted.has(objectKey(o)));
  return { lookups: [], apply, prune, conflicts, hashers };
}
