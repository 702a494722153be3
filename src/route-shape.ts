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

/** Warnings about what the selected routes' shapes do to affinity and to fallback: NextEndpoint. */
export function routeShapeWarnings(ms: ModelService, routes: readonly KubeObject[]): string[] {
  if (affinityType(ms) === 'None') return [];
  const warnings: string[] = [];
  for (const route of selectedRoutes(ms, routes)) {
    const name = `${route.metadata.namespace}/${route.metadata.name}`;
    const shape = routeShape(route);
    if (shape === 'Rejected') {
      warnings.push(
        `route ${name} has per-backendRef URLRewrite path rewrites, which Envoy Gateway v1.9 rejects (ResolvedRefs=False; requests get 500): ` +
          'affinity cannot take effect until the path rewrite moves to a rule-level filter',
      );
    } else if (shape === 'ClusterPerBackendRef' && ms.spec?.affinity?.fallback === 'NextEndpoint') {
      warnings.push(
        `spec.affinity.fallback: NextEndpoint is limited on route ${name}: its backendRefs carry their own filters, so each is its own ` +
          'Envoy cluster and the hash picks the cluster before any health check (weighted_clusters). When a cluster is down, every ' +
          'request hashed to it fails with 503: retries stay inside that cluster and outlier detection cannot move its keys; the other ' +
          "clusters' keys are unaffected. Move the filters to the rule (per-cluster Host: Backends with hostname and an HTTPRouteFilter " +
          'hostname type Backend) to get failover',
      );
    }
  }
  return warnings;
}
