// The reconciler against a real API server with Gateway API and Envoy Gateway
// v1.9.0 CRDs: objects accepted by their real schemas and CEL rules, pruning,
// drift repair, conditions, events, leader election, garbage collection.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import type { KubeObject } from '../src/model-service.ts';
import { GENERATED_KINDS, GENERATED_RESOURCES, render } from '../src/render.ts';
import { renderDocuments } from '../bin/render-command.ts';
import { type ManagedProcess, startProcess, waitFor } from './testbed/processes.ts';
import { type Testbed, createNamespace, testbed } from './testbed/testbed.ts';
import { CLI } from './testbed/webhook.ts';
import { generatedObjects } from './testbed/generated.ts';
import { modelService as fixture } from './fixtures/model-service.ts';

const IMAGE = 'registry.example/modelplane-affinity:test';
let tb: Testbed;
let ns: string;
const reconcilers: ManagedProcess[] = [];

function startReconciler(id: string): ManagedProcess {
  const proc = startProcess(
    process.execPath,
    [CLI, 'reconcile', '--ext-proc-image', IMAGE, '--leader-election-namespace', ns, '--lease-duration', '3s', '--renew-deadline', '2s', '--retry-period', '500ms'],
    join(tb.dir, `reconciler-${id}.log`),
    { ...process.env, KUBECONFIG: tb.kubeconfig, HOSTNAME: `reconciler-${id}` },
  );
  reconcilers.push(proc);
  return proc;
}

const modelService = (name: string, affinity: Record<string, unknown>) => fixture(name, affinity, { namespace: ns });

async function getJson<T = KubeObject>(resource: string, name: string): Promise<T | undefined> {
  const r = await tb.kubectl(['get', resource, name, '-n', ns, '-o', 'json']);
  return r.code === 0 ? (JSON.parse(r.stdout) as T) : undefined;
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  await waitFor(what, check, timeoutMs, () => reconcilers.map((r) => r.tail(15)).join('\n---\n'));
}

const RESOURCE: Record<string, string> = Object.fromEntries(GENERATED_KINDS.map((k, i) => [k.kind, GENERATED_RESOURCES[i] as string]));

async function ownedNames(msName: string): Promise<string[]> {
  return (await generatedObjects(tb, ns, msName)).map((o) => `${o.kind}/${o.metadata.name}`).sort();
}

beforeAll(async () => {
  tb = testbed();
  ns = await createNamespace(tb, 'reconciler');
  startReconciler('a');
  await eventually('leader lease', async () => (await getJson('lease.coordination.k8s.io', 'modelplane-affinity')) !== undefined);
});

afterAll(async () => {
  for (const r of reconcilers) await r.stop();
});

describe('reconciler', () => {
  it('creates exactly the SPEC §3 objects for PrefixHash, accepted by the real CRD schemas, matching render', async () => {
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('kimi', { type: 'PrefixHash', prefixBytes: 2048 })) });
    await eventually('five objects', async () => (await ownedNames('kimi')).length === 5);
    expect(await ownedNames('kimi')).toEqual([
      'BackendTrafficPolicy/kimi-affinity',
      'Deployment/kimi-prefix-hash',
      'EnvoyExtensionPolicy/kimi-prefix-hash',
      'PodDisruptionBudget/kimi-prefix-hash',
      'Service/kimi-prefix-hash',
    ]);
    // What `render` prints is what the reconciler applied (one function): every rendered field is live.
    const live = await getJson<{ metadata: { uid: string } }>('modelservice', 'kimi');
    const source = modelService('kimi', { type: 'PrefixHash', prefixBytes: 2048 });
    const rendered = render({ ...source, metadata: { name: 'kimi', namespace: ns, uid: live?.metadata.uid as string } }, { extProcImage: IMAGE });
    for (const object of rendered.objects) {
      const current = await getJson(RESOURCE[object.kind] as string, object.metadata.name as string);
      expect(current, object.kind).toMatchObject({ metadata: { labels: object.metadata.labels, ownerReferences: object.metadata.ownerReferences }, ...(object.spec ? { spec: object.spec } : {}) });
    }
    // And the CLI's render prints the same objects (no ownerReferences without a uid).
    const cli = renderDocuments(stringify(modelService('kimi', { type: 'PrefixHash', prefixBytes: 2048 })), IMAGE);
    const cliObjects = cli.yaml.split('---\n').filter(Boolean).map((d) => parse(d) as KubeObject).slice(1);
    expect(cliObjects.map((o) => o.spec)).toEqual(rendered.objects.map((o) => o.spec));
  });

  it('reports AffinityReady=True with reason Applied and records an Event', async () => {
    await eventually('AffinityReady', async () => {
      const ms = await getJson<{ status?: { conditions?: { type: string; status: string; reason: string }[] } }>('modelservice', 'kimi');
      return ms?.status?.conditions?.some((c) => c.type === 'AffinityReady' && c.status === 'True' && c.reason === 'Applied') ?? false;
    });
    const events = await tb.kubectlOk(['get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=kimi', '-o', 'json']);
    expect((JSON.parse(events) as { items: { reason: string }[] }).items.map((e) => e.reason)).toContain('Applied');
  });

  it('prunes on PrefixHash → Session → None', async () => {
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('kimi', { type: 'Session', sessionHeader: 'X-Session-ID' })) });
    await eventually('only the BackendTrafficPolicy', async () => (await ownedNames('kimi')).join() === 'BackendTrafficPolicy/kimi-affinity');
    const btp = await getJson<{ spec: { loadBalancer: unknown } }>(RESOURCE.BackendTrafficPolicy as string, 'kimi-affinity');
    expect(btp?.spec.loadBalancer).toMatchObject({ type: 'ConsistentHash', consistentHash: { type: 'Headers', headers: [{ name: 'X-Session-ID' }] } });
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('kimi', { type: 'None' })) });
    await eventually('nothing', async () => (await ownedNames('kimi')).length === 0);
  });

  it('restores a deleted generated object and reverts a hand edit', async () => {
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('drift', { type: 'Session', sessionHeader: 'X-User' })) });
    await eventually('policy', async () => (await getJson(RESOURCE.BackendTrafficPolicy as string, 'drift-affinity')) !== undefined);
    await tb.kubectlOk(['delete', RESOURCE.BackendTrafficPolicy as string, 'drift-affinity', '-n', ns]);
    await eventually('policy back', async () => (await getJson(RESOURCE.BackendTrafficPolicy as string, 'drift-affinity')) !== undefined);
    await tb.kubectlOk(['patch', RESOURCE.BackendTrafficPolicy as string, 'drift-affinity', '-n', ns, '--type', 'json', '-p', JSON.stringify([{ op: 'replace', path: '/spec/loadBalancer/consistentHash/headers/0/name', value: 'X-Edited' }])]);
    await eventually('edit reverted', async () => {
      const btp = await getJson<{ spec: { loadBalancer: { consistentHash: { headers: { name: string }[] } } } }>(RESOURCE.BackendTrafficPolicy as string, 'drift-affinity');
      return btp?.spec.loadBalancer.consistentHash.headers[0]?.name === 'X-User';
    });
  });

  it('never touches a namesake object it does not control, and says so in the condition', async () => {
    await tb.kubectlOk(['apply', '-f', '-'], {
      input: stringify({
        apiVersion: 'gateway.envoyproxy.io/v1alpha1',
        kind: 'BackendTrafficPolicy',
        metadata: { name: 'squatter-affinity', namespace: ns },
        spec: { targetSelectors: [{ kind: 'HTTPRoute', matchLabels: { app: 'other' } }], loadBalancer: { type: 'RoundRobin' } },
      }),
    });
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('squatter', { type: 'Session', sessionHeader: 'X-User' })) });
    await eventually('ObjectConflict', async () => {
      const ms = await getJson<{ status?: { conditions?: { reason: string }[] } }>('modelservice', 'squatter');
      return ms?.status?.conditions?.some((c) => c.reason === 'ObjectConflict') ?? false;
    });
    const btp = await getJson<{ spec: { loadBalancer: { type: string } } }>(RESOURCE.BackendTrafficPolicy as string, 'squatter-affinity');
    expect(btp?.spec.loadBalancer.type).toBe('RoundRobin');
  });

  it('reports FailoverLimited while the selected route has per-backendRef filters, and Applied once they move to the rule', async () => {
    const route = (filters: boolean) =>
      stringify({
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'HTTPRoute',
        metadata: { name: 'shaped', namespace: ns, labels: { 'crossplane.io/composite': 'shaped' } },
        spec: {
          parentRefs: [{ name: 'modelplane', namespace: 'modelplane-system' }],
          rules: [
            {
              backendRefs: ['a', 'b'].map((c) => ({
                name: `shaped-${c}`,
                port: 80,
                ...(filters ? { filters: [{ type: 'URLRewrite', urlRewrite: { hostname: `gw.${c}.example.com` } }] } : {}),
              })),
            },
          ],
        },
      });
    const reason = async () => (await getJson<{ status?: { conditions?: { reason: string; message: string }[] } }>('modelservice', 'shaped'))?.status?.conditions?.[0];
    await tb.kubectlOk(['apply', '-f', '-'], { input: route(true) });
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('shaped', { type: 'Session', sessionHeader: 'X-User' })) });
    await eventually('FailoverLimited', async () => (await reason())?.reason === 'FailoverLimited');
    expect((await reason())?.message).toContain(`NextEndpoint is limited on route ${ns}/shaped`);
    await tb.kubectlOk(['apply', '-f', '-'], { input: route(false) });
    await eventually('Applied once the route collapses into one cluster', async () => (await reason())?.reason === 'Applied');
  });

  it('garbage-collects everything a deleted ModelService owned', async () => {
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('gone', { type: 'PrefixHash' })) });
    await eventually('five objects', async () => (await ownedNames('gone')).length === 5);
    await tb.kubectlOk(['delete', 'modelservice', 'gone', '-n', ns]);
    await eventually('all collected by kube-controller-manager', async () => (await ownedNames('gone')).length === 0, 60_000);
  });

  it('runs one writer among two replicas, and the other takes over when the leader is killed', async () => {
    const leaseHolder = async () => (await getJson<{ spec: { holderIdentity?: string } }>('lease.coordination.k8s.io', 'modelplane-affinity'))?.spec.holderIdentity ?? '';
    const first = reconcilers[0] as ManagedProcess;
    expect(await leaseHolder()).toMatch(/^reconciler-a_/);
    const second = startReconciler('b');
    await new Promise((r) => setTimeout(r, 2500));
    expect(await leaseHolder()).toMatch(/^reconciler-a_/);
    expect(second.tail(50)).not.toContain('became leader');
    expect(second.tail(50)).not.toContain('reconciler started');
    first.child.kill('SIGKILL');
    await eventually('the second replica leads', async () => (await leaseHolder()).startsWith('reconciler-b_'), 20_000);
    await tb.kubectlOk(['apply', '-f', '-'], { input: stringify(modelService('after-failover', { type: 'Session', sessionHeader: 'X-User' })) });
    await eventually('the new leader reconciles', async () => (await getJson(RESOURCE.BackendTrafficPolicy as string, 'after-failover-affinity')) !== undefined);
  });
});
