// The gateway's own verdict: Envoy Gateway v1.9.0's translator (egctl x
// translate, built from its Go module) on a Modelplane-shaped fleet gateway
// plus exactly what `render` generates. Assertions are on the xDS Envoy would
// receive. egctl's offline loader drops labels, so targetSelectors are resolved
// to targetRefs first (resolveTargetSelectors says how); the selectors
// themselves are exercised against the real CRDs in reconciler.int.test.ts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import type { KubeObject, ModelService } from '../src/model-service.ts';
import { render } from '../src/render.ts';
import { translate } from './testbed/egctl.ts';
import { REPO_ROOT } from './testbed/go-tools.ts';
import { cluster, endpoints, httpFilterChains, httpFilters, lbConfig, lbPolicy, resolveTargetSelectors, routeFor, statuses } from './testbed/xds.ts';

const IMAGE = 'ghcr.io/modelplane/modelplane-affinity:test';
const fleet = parseAllDocuments(readFileSync(join(REPO_ROOT, 'examples', 'gateway', 'fleet-gateway.yaml'), 'utf8')).map((d) => d.toJSON() as KubeObject);

function modelService(name: string, affinity: Record<string, unknown>): ModelService {
  return { apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name, namespace: 'ml' }, spec: { endpoints: [{ weight: 1 }, { weight: 1 }], affinity } };
}

async function translated(objects: KubeObject[], ...modelServices: ModelService[]) {
  const generated = modelServices
    .flatMap((ms) => render(ms, { extProcImage: IMAGE }).objects)
    // Offline there is no API server to allocate the hasher Service's cluster IP; Envoy Gateway needs an address.
    .map((o) => (o.kind === 'Service' ? { ...o, spec: { ...(o.spec as object), clusterIP: '10.0.0.99' } } : o));
  return (await translate(resolveTargetSelectors([...objects, ...generated]))).output;
}

describe('Envoy Gateway v1.9.0 translation of what we generate', () => {
  it('Session on a route with per-backendRef filters: hash on the session header picks among weighted_clusters', async () => {
    const out = await translated(fleet, modelService('kimi-k2', { type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'NextEndpoint' }));
    expect(statuses(out)['backendTrafficPolicies/kimi-k2-affinity']).toContain('Accepted=True');
    const route = routeFor(out, 'ml', 'kimi-k2')?.route;
    expect(route.hashPolicy).toEqual([{ header: { headerName: 'X-Session-ID' } }]);
    expect(route.weightedClusters.useHashPolicy).toBe(true);
    expect(route.weightedClusters.clusters).toHaveLength(2);
    // NextEndpoint: outlier detection on each cluster and a retry on connect-failure/reset ...
    expect(route.retryPolicy).toMatchObject({ numRetries: 2, retryOn: 'connect-failure,reset' });
    for (const { name } of route.weightedClusters.clusters) {
      expect(lbPolicy(cluster(out, name))).toBe('envoy.load_balancing_policies.maglev');
      expect(cluster(out, name)?.outlierDetection).toMatchObject({ consecutiveGatewayFailure: 3, consecutiveLocalOriginFailure: 3, maxEjectionPercent: 50 });
      // ... but each cluster holds one host: the hash picks the cluster before any health check,
      // so an ejected cluster keeps its keys. This is why the reconciler reports FailoverLimited here.
      const hosts = (endpoints(out, name)?.endpoints ?? []).flatMap((l: { lbEndpoints?: unknown[] }) => l.lbEndpoints ?? []);
      expect(hosts).toHaveLength(1);
    }
  });

  it('Session on a route without per-backendRef filters: one Maglev cluster holds every inference cluster, so ejected hosts leave the ring', async () => {
    const out = await translated(fleet, modelService('llama-70b', { type: 'Session', sessionHeader: 'X-Session-ID' }));
    const route = routeFor(out, 'ml', 'llama-70b')?.route;
    expect(route.hashPolicy).toEqual([{ header: { headerName: 'X-Session-ID' } }]);
    expect(route.cluster).toBe('httproute/ml/llama-70b/rule/0');
    expect(route.weightedClusters).toBeUndefined();
    const one = cluster(out, route.cluster);
    expect(lbPolicy(one)).toBe('envoy.load_balancing_policies.maglev');
    expect(one?.outlierDetection).toBeDefined();
    expect(endpoints(out, route.cluster)?.endpoints).toHaveLength(2);
    expect(route.retryPolicy.retryHostPredicate?.[0]?.name).toBe('envoy.retry_host_predicates.previous_hosts');
  });

  it('PrefixHash: an ext_proc filter on the hasher (BUFFERED_PARTIAL, fail open) over h2c, and the route hashes x-prompt-hash', async () => {
    const out = await translated(fleet, modelService('kimi-k2', { type: 'PrefixHash' }));
    const all = statuses(out);
    expect(all['backendTrafficPolicies/kimi-k2-affinity']).toContain('Accepted=True');
    expect(all['envoyExtensionPolicies/kimi-k2-prefix-hash']).toContain('Accepted=True');
    const route = routeFor(out, 'ml', 'kimi-k2');
    expect(route?.route.hashPolicy).toEqual([{ header: { headerName: 'x-prompt-hash' } }]);
    expect(route?.route.weightedClusters.useHashPolicy).toBe(true);
    const filterName = Object.keys(route?.typedPerFilterConfig ?? {}).find((k) => k.startsWith('envoy.filters.http.ext_proc/'));
    expect(filterName).toBe('envoy.filters.http.ext_proc/envoyextensionpolicy/ml/kimi-k2-prefix-hash/extproc/0');
    const filter = httpFilters(out).find((f) => f.name === filterName);
    expect(filter?.typedConfig).toMatchObject({
      failureModeAllow: true,
      processingMode: { requestHeaderMode: 'SEND', requestBodyMode: 'BUFFERED_PARTIAL', responseHeaderMode: 'SKIP' },
      grpcService: { envoyGrpc: { clusterName: 'envoyextensionpolicy/ml/kimi-k2-prefix-hash/extproc/0' } },
    });
    // The filter runs before the router, so the header it sets reaches the hash policy.
    const names = (httpFilterChains(out).find((chain) => chain.some((f) => f.name === filterName)) ?? []).map((f) => f.name);
    expect(names.indexOf(filterName as string)).toBeLessThan(names.indexOf('envoy.filters.http.router'));
    const hasher = cluster(out, 'envoyextensionpolicy/ml/kimi-k2-prefix-hash/extproc/0');
    expect(hasher?.typedExtensionProtocolOptions?.['envoy.extensions.upstreams.http.v3.HttpProtocolOptions']?.explicitHttpConfig?.http2ProtocolOptions).toBeDefined();
    expect(hasher?.transportSocket).toBeUndefined(); // plaintext HTTP/2 (h2c)
  });

  it('fallback None adds neither outlier detection nor retries', async () => {
    const out = await translated(fleet, modelService('llama-70b', { type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'None' }));
    const route = routeFor(out, 'ml', 'llama-70b')?.route;
    expect(route.hashPolicy).toEqual([{ header: { headerName: 'X-Session-ID' } }]);
    expect(route.retryPolicy).toBeUndefined();
    expect(cluster(out, route.cluster)?.outlierDetection).toBeUndefined();
  });

  it('records what happens to unequal weights when backendRefs collapse into one Maglev cluster (envoyproxy/gateway#9775)', async () => {
    const weighted = fleet.map((o) =>
      o.kind === 'HTTPRoute' && o.metadata.name === 'llama-70b'
        ? { ...o, spec: { ...(o.spec as object), rules: [{ backendRefs: [{ name: 'llama-70b-us-east', port: 80, weight: 1 }, { name: 'llama-70b-eu-west', port: 80, weight: 3 }] }] } }
        : o,
    );
    const withAffinity = await translated(weighted, modelService('llama-70b', { type: 'Session', sessionHeader: 'X-Session-ID' }));
    const route = routeFor(withAffinity, 'ml', 'llama-70b')?.route;
    const one = cluster(withAffinity, route.cluster);
    const localityWeights = (endpoints(withAffinity, route.cluster)?.endpoints ?? []).map((l: { loadBalancingWeight?: number }) => l.loadBalancingWeight);
    expect(localityWeights.sort()).toEqual([1, 3]);
    // Maglev without locality-weighted LB: Envoy ignores the locality weights, the ring splits 1:1.
    expect(lbPolicy(one)).toBe('envoy.load_balancing_policies.maglev');
    expect(lbConfig(one)?.localityLbConfig).toBeUndefined();
    // Without affinity the same route honours the weights (least_request with locality weighting).
    const without = await translated(weighted);
    const plain = cluster(without, routeFor(without, 'ml', 'llama-70b')?.route.cluster);
    expect(lbPolicy(plain)).toBe('envoy.load_balancing_policies.least_request');
    expect(lbConfig(plain)?.localityLbConfig).toEqual({ localityWeightedLbConfig: {} });
  });
});
