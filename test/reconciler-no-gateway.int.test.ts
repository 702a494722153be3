// A cluster without Envoy Gateway, and without our webhook: the reconciler says
// so in AffinityReady (GatewayCRDsMissing), recovers by itself once the CRDs
// are installed, and reports InvalidSpec for a spec the webhook would have
// refused. Uses a control plane of its own, with only our CRD at first.
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { type ControlPlane, startControlPlane } from './testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from './testbed/crds.ts';
import { type ManagedProcess, startProcess, waitFor } from './testbed/processes.ts';
import { CLI } from './testbed/webhook.ts';

let cp: ControlPlane;
let reconciler: ManagedProcess;

beforeAll(async () => {
  cp = await startControlPlane();
  await installCrds(cp, [MODEL_SERVICE_CRD]);
  reconciler = startProcess(process.execPath, [CLI, 'reconcile', '--no-leader-elect'], join(cp.dir, 'reconciler.log'), { ...process.env, KUBECONFIG: cp.kubeconfig });
}, 300_000);

afterAll(async () => {
  await reconciler?.stop();
  await cp?.stop();
});

/** Applies ModelService default/kimi with this Session header (fallback None). */
async function applySession(sessionHeader: string): Promise<void> {
  await cp.kubectlOk(['apply', '-f', '-'], {
    input: stringify({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'kimi', namespace: 'default' }, spec: { affinity: { type: 'Session', sessionHeader, fallback: 'None' } } }),
  });
}

async function condition(): Promise<{ status: string; reason: string; message: string } | undefined> {
  const out = await cp.kubectl(['get', 'modelservice', 'kimi', '-n', 'default', '-o', 'json']);
  return out.code === 0 ? JSON.parse(out.stdout).status?.conditions?.[0] : undefined;
}

/** Waits until AffinityReady has this reason, and returns the condition. */
async function conditionWithReason(reason: string, timeoutMs: number): Promise<{ status: string; reason: string; message: string } | undefined> {
  await waitFor(reason, async () => (await condition())?.reason === reason, timeoutMs, () => reconciler.tail());
  return condition();
}

it('reports GatewayCRDsMissing without Envoy Gateway, then applies once its CRDs arrive', async () => {
  await applySession('X-Session-ID');
  const missing = await conditionWithReason('GatewayCRDsMissing', 60_000);
  expect(missing?.status).toBe('False');
  expect(missing?.message).toContain('install Envoy Gateway >= v1.9.0');

  await installCrds(cp, await gatewayCrdFiles());
  // Retried with backoff (at most 60 s between attempts), and the watch restarts on its own.
  await conditionWithReason('Applied', 120_000);
  expect((await cp.kubectl(['get', 'backendtrafficpolicies.gateway.envoyproxy.io', 'kimi-affinity', '-n', 'default'])).code).toBe(0);
}, 240_000);

it('reports InvalidSpec when the webhook was bypassed, and leaves the objects it applied before', async () => {
  // This control plane has no webhook registered, so the API server stores what it is given.
  await applySession('Connection');
  const invalid = await conditionWithReason('InvalidSpec', 60_000);
  expect(invalid?.status).toBe('False');
  expect(invalid?.message).toContain('spec.affinity.sessionHeader: Invalid value: "Connection": must not be a hop-by-hop header');
  const btp = JSON.parse(await cp.kubectlOk(['get', 'backendtrafficpolicies.gateway.envoyproxy.io', 'kimi-affinity', '-n', 'default', '-o', 'json']));
  expect(btp.spec.loadBalancer.consistentHash.headers[0].name).toBe('X-Session-ID');
}, 120_000);
