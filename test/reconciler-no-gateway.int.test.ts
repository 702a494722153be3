// A cluster without Envoy Gateway: the reconciler says so in AffinityReady
// (GatewayCRDsMissing) and recovers by itself once the CRDs are installed.
// Uses a control plane of its own, with only our CRD at first.
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

async function condition(): Promise<{ status: string; reason: string; message: string } | undefined> {
  const out = await cp.kubectl(['get', 'modelservice', 'kimi', '-n', 'default', '-o', 'json']);
  return out.code === 0 ? JSON.parse(out.stdout).status?.conditions?.[0] : undefined;
}

it('reports GatewayCRDsMissing without Envoy Gateway, then applies once its CRDs arrive', async () => {
  await cp.kubectlOk(['apply', '-f', '-'], {
    input: stringify({ apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService', metadata: { name: 'kimi', namespace: 'default' }, spec: { affinity: { type: 'Session', sessionHeader: 'X-Session-ID', fallback: 'None' } } }),
  });
  await waitFor('GatewayCRDsMissing', async () => (await condition())?.reason === 'GatewayCRDsMissing', 60_000, () => reconciler.tail());
  const missing = await condition();
  expect(missing?.status).toBe('False');
  expect(missing?.message).toContain('install Envoy Gateway >= v1.9.0');

  await installCrds(cp, await gatewayCrdFiles());
  // Retried with backoff (at most 60 s between attempts), and the watch restarts on its own.
  await waitFor('Applied', async () => (await condition())?.reason === 'Applied', 120_000, () => reconciler.tail());
  expect((await cp.kubectl(['get', 'backendtrafficpolicies.gateway.envoyproxy.io', 'kimi-affinity', '-n', 'default'])).code).toBe(0);
}, 240_000);
