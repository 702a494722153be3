// Read what matters out of `egctl x translate` output (pure): resource
// statuses, and the routes, clusters, endpoints and HTTP filters of the xDS.
// Field names are the proto3 JSON names egctl prints (weightedClusters, ...).
import { CROSSPLANE_COMPOSITE_LABEL, MODEL_SERVICE_LABEL } from '../../src/naming.ts';
import type { KubeObject } from '../../src/model-service.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * egctl's offline loader keeps only name and namespace of each object, so
 * label-based targetSelectors never match there. This resolves each selector
 * the way Envoy Gateway does in a cluster (same namespace, HTTPRoute labels)
 * into targetRefs, so the translator can judge the rest of the policy.
 */
export function resolveTargetSelectors(objects: readonly KubeObject[]): KubeObject[] {
  const routes = objects.filter((o) => o.kind === 'HTTPRoute');
  return objects.map((o) => {
    const spec = o.spec as Json | undefined;
    if (!spec?.targetSelectors) return o;
    const selected = routes.filter(
      (r) =>
        r.metadata.namespace === o.metadata.namespace &&
        (spec.targetSelectors as Json[]).some((s) => s.kind === 'HTTPRoute' && Object.entries(s.matchLabels ?? {}).every(([k, v]) => r.metadata.labels?.[k] === v)),
    );
    const { targetSelectors: _, ...rest } = spec;
    return { ...o, spec: { ...rest, targetRefs: selected.map((r) => ({ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: r.metadata.name })) } };
  });
}

export const SELECTOR_LABELS = [CROSSPLANE_COMPOSITE_LABEL, MODEL_SERVICE_LABEL];

function configs(output: Json): Json[] {
  return Object.values((output.xds ?? {}) as Record<string, Json>).flatMap((x) => x.configs ?? []);
}

function ofType(output: Json, suffix: string): Json[] {
  return configs(output).filter((c) => String(c['@type']).endsWith(suffix));
}

export function clusters(output: Json): Json[] {
  return ofType(output, 'ClustersConfigDump').flatMap((c) => (c.dynamicActiveClusters ?? []).map((d: Json) => d.cluster));
}

export function cluster(output: Json, name: string): Json | undefined {
  return clusters(output).find((c) => c.name === name);
}

export function endpoints(output: Json, clusterName: string): Json | undefined {
  return ofType(output, 'EndpointsConfigDump')
    .flatMap((c) => (c.dynamicEndpointConfigs ?? []).map((d: Json) => d.endpointConfig))
    .find((e: Json) => e.clusterName === clusterName);
}

export function routes(output: Json): Json[] {
  return ofType(output, 'RoutesConfigDump').flatMap((c) =>
    (c.dynamicRouteConfigs ?? []).flatMap((d: Json) => (d.routeConfig.virtualHosts ?? []).flatMap((vh: Json) => vh.routes ?? [])),
  );
}

/** The xDS route of an HTTPRoute's first rule and match. */
export function routeFor(output: Json, namespace: string, name: string): Json | undefined {
  return routes(output).find((r) => String(r.name).startsWith(`httproute/${namespace}/${name}/rule/0/match/0`));
}

export function httpFilters(output: Json): Json[] {
  return httpFilterChains(output).flat();
}

/** The HTTP filters of each filter chain of each listener, in order. */
export function httpFilterChains(output: Json): Json[][] {
  return ofType(output, 'ListenersConfigDump').flatMap((c) =>
    (c.dynamicListeners ?? []).flatMap((d: Json) => {
      const l = d.activeState?.listener ?? {};
      const chains = [...(l.defaultFilterChain ? [l.defaultFilterChain] : []), ...(l.filterChains ?? [])];
      return chains.map((fc: Json) => (fc.filters ?? []).flatMap((f: Json) => f.typedConfig?.httpFilters ?? []));
    }),
  );
}

/** The name of the load-balancing policy extension of a cluster, e.g. `envoy.load_balancing_policies.maglev`. */
export function lbPolicy(c: Json | undefined): string | undefined {
  return c?.loadBalancingPolicy?.policies?.[0]?.typedExtensionConfig?.name;
}

/** The typed config of a cluster's load-balancing policy (Maglev, LeastRequest, ...). */
export function lbConfig(c: Json | undefined): Json | undefined {
  return c?.loadBalancingPolicy?.policies?.[0]?.typedExtensionConfig?.typedConfig;
}

/** `{"<kind>/<name>": "Accepted=True"...}` for every policy and route in the output. */
export function statuses(output: Json): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const key of ['backendTrafficPolicies', 'envoyExtensionPolicies', 'httpRoutes']) {
    for (const o of (output[key] ?? []) as Json[]) {
      const s = o.status ?? {};
      out[`${key}/${o.metadata.name}`] = [...(s.ancestors ?? []), ...(s.parents ?? [])].flatMap((a: Json) =>
        (a.conditions ?? []).map((c: Json) => `${c.type}=${c.status}`),
      );
    }
  }
  return out;
}
