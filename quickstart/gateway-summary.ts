// A readable summary of Envoy Gateway's translation of the fleet gateway plus
// the objects the reconciler generated: which header each route hashes, what
// picks the cluster, and the hasher filter.
import type { KubeObject } from '../src/model-service.ts';
import { translate } from '../test/testbed/egctl.ts';
import { cluster, endpoints, httpFilters, lbPolicy, resolveTargetSelectors, routeFor, statuses } from '../test/testbed/xds.ts';

/** Strips what the API server adds, keeping what the translator reads. */
function asInput(o: KubeObject): KubeObject {
  const { name, namespace, labels } = o.metadata;
  return { apiVersion: o.apiVersion, kind: o.kind, metadata: { name, namespace, ...(labels ? { labels } : {}) }, ...(o.spec ? { spec: o.spec } : {}) };
}

export async function gatewaySummary(objects: KubeObject[]): Promise<string> {
  const { output } = await translate(resolveTargetSelectors(objects.map(asInput)));
  const lines: string[] = [];
  for (const [name, conditions] of Object.entries(statuses(output))) lines.push(`${name}: ${conditions.join(', ')}`);
  for (const route of objects.filter((o) => o.kind === 'HTTPRoute')) {
    const xds = routeFor(output, route.metadata.namespace ?? '', route.metadata.name ?? '');
    const action = xds?.route ?? {};
    const headers = (action.hashPolicy ?? []).map((h: { header?: { headerName?: string } }) => h.header?.headerName).filter(Boolean);
    lines.push(`route ${route.metadata.namespace}/${route.metadata.name}:`);
    lines.push(`  hashes header: ${headers.length > 0 ? headers.join(', ') : '(none: random cluster per request)'}`);
    if (action.weightedClusters) {
      const picked = action.weightedClusters.useHashPolicy ? 'the hash picks the cluster (weighted_clusters, use_hash_policy)' : 'random weighted pick';
      lines.push(`  ${action.weightedClusters.clusters.length} clusters, one per backendRef: ${picked}; failover stays inside the picked cluster`);
    } else if (action.cluster) {
      const eps = (endpoints(output, action.cluster)?.endpoints ?? []).length;
      lines.push(`  one cluster (${lbPolicy(cluster(output, action.cluster))?.replace('envoy.load_balancing_policies.', '')}) holding ${eps} inference clusters: an ejected one leaves the ring, its keys move on`);
    }
    const firstCluster = action.cluster ?? action.weightedClusters?.clusters?.[0]?.name;
    const outlier = cluster(output, firstCluster)?.outlierDetection;
    lines.push(`  outlier detection: ${outlier ? 'on' : 'off'}; retry: ${action.retryPolicy?.retryOn ?? 'none'}`);
    const extProc = Object.keys(xds?.typedPerFilterConfig ?? {}).find((k) => k.startsWith('envoy.filters.http.ext_proc/'));
    if (extProc) {
      const filter = httpFilters(output).find((f) => f.name === extProc)?.typedConfig ?? {};
      lines.push(`  ext_proc: ${filter.grpcService?.envoyGrpc?.authority ?? filter.grpcService?.envoyGrpc?.clusterName}, request body ${filter.processingMode?.requestBodyMode}, fail open: ${filter.failureModeAllow === true}`);
    }
  }
  return lines.join('\n');
}
