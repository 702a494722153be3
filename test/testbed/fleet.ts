// A Modelplane-shaped fleet for the data plane: one Envoy Gateway Backend per
// inference cluster (static loopback endpoints: the API server refuses
// EndpointSlice addresses in 127.0.0.0/8) and an HTTPRoute per ModelService
// in either of the two shapes Envoy Gateway v1.9 translates differently:
// - 'one-cluster': backendRefs without filters collapse into one Envoy
//   cluster, balanced by Maglev over its hosts;
// - 'weighted': each backendRef has its own filter (a URLRewrite of the
//   Host, as Modelplane writes per cluster), so each is its own Envoy cluster
//   and the route picks one through weighted_clusters + use_hash_policy.
import { stringify } from 'yaml';
import { CROSSPLANE_COMPOSITE_LABEL } from '../../src/naming.ts';
import { GATEWAY_NAME, GATEWAY_NAMESPACE } from './data-plane.ts';

export type RouteShapeName = 'one-cluster' | 'weighted';

export interface ClusterAddress {
  name: string;
  host: string;
  port: number;
}

export function backend(namespace: string, cluster: ClusterAddress): Record<string, unknown> {
  return {
    apiVersion: 'gateway.envoyproxy.io/v1alpha1',
    kind: 'Backend',
    metadata: { name: cluster.name, namespace },
    spec: { endpoints: [{ ip: { address: cluster.host, port: cluster.port } }] },
  };
}

/** The path prefix a ModelService's route matches: /<namespace>/<name>/ as Modelplane composes it. */
export function routePrefix(namespace: string, modelService: string): string {
  return `/${namespace}/${modelService}/`;
}

export function httpRoute(namespace: string, modelService: string, shape: RouteShapeName, clusters: readonly ClusterAddress[]): Record<string, unknown> {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: modelService, namespace, labels: { [CROSSPLANE_COMPOSITE_LABEL]: modelService } },
    spec: {
      parentRefs: [{ name: GATEWAY_NAME, namespace: GATEWAY_NAMESPACE }],
      rules: [
        {
          matches: [{ path: { type: 'PathPrefix', value: routePrefix(namespace, modelService) } }],
          backendRefs: clusters.map((c) => ({
            group: 'gateway.envoyproxy.io',
            kind: 'Backend',
            name: c.name,
            weight: 1,
            ...(shape === 'weighted' ? { filters: [{ type: 'URLRewrite', urlRewrite: { hostname: `${c.name}.inference.example` } }] } : {}),
          })),
        },
      ],
    },
  };
}

export function yamlDocuments(objects: readonly Record<string, unknown>[]): string {
  return objects.map((o) => stringify(o)).join('---\n');
}
