// Admission webhook benchmarks (issue 3):
//  1. the webhook alone, pinned to one core: AdmissionReviews/s at saturation
//     over keep-alive HTTPS, and p50/p99 at half that rate;
//  2. through a real kube-apiserver: creating 500 ModelServices with the
//     webhooks registered vs. with none, in the same run, as a ratio.
// Usage: npm run bench:webhook   (node bench/webhook.ts [--count 500])
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import { join } from 'node:path';
import { KubeConfig, CustomObjectsApi, CoreV1Api } from '@kubernetes/client-node';
import { startControlPlane } from '../test/testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, installCrds } from '../test/testbed/crds.ts';
import { startProcess, freePort, waitFor } from '../test/testbed/processes.ts';
import { CLI, makeWebhookCertificates, registerWebhooks, unregisterWebhooks } from '../test/testbed/webhook.ts';
import { formatRow, runLoad } from './stats.ts';

const count = Number(process.argv[process.argv.indexOf('--count') + 1] || 500) || 500;
const fixture = readFileSync(new URL('../test/fixtures/admission/create-prefixhash.json', import.meta.url));

async function webhookAlone(dir: string): Promise<void> {
  const certDir = join(dir, 'bench-certs');
  const { ca } = makeWebhookCertificates(dir, certDir, 'bench');
  const port = await freePort();
  // One core for the webhook (cpu 0), the load generator runs on the other.
  const proc = startProcess('taskset', ['-c', '0', process.execPath, CLI, 'webhook', '--port', String(port), '--host', '127.0.0.1', '--cert-dir', certDir], join(dir, 'bench-webhook.log'), {
    ...process.env,
    LOG_LEVEL: 'warn',
  });
  const agent = new Agent({ keepAlive: true, maxSockets: 64, ca: ca.certPem });
  const post = (path: string) =>
    new Promise<void>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path, method: 'POST', agent, servername: 'localhost', headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(String(res.statusCode)))));
      });
      req.on('error', reject);
      req.end(fixture);
    });
  await waitFor('bench webhook', async () => (await post('/validate').then(() => true)), 20_000, () => proc.tail());
  console.log('\n## Webhook alone (one core, keep-alive HTTPS, /mutate with a PrefixHash ModelService)\n');
  console.log(formatRow(['load', 'requests', 'errors', 'per second', 'p50 ms', 'p99 ms']));
  console.log(formatRow(['---', '---', '---', '---', '---', '---']));
  await runLoad(() => post('/mutate'), { concurrency: 16, maxRequests: 3000, maxSeconds: 10 }); // warm-up (JIT)
  const saturated = await runLoad(() => post('/mutate'), { concurrency: 32, maxRequests: 100_000, maxSeconds: 15 });
  console.log(formatRow(['saturation, 32 in flight', saturated.requests, saturated.errors, saturated.perSecond, saturated.p50Ms, saturated.p99Ms]));
  const half = Math.round(saturated.perSecond / 2);
  const paced = await runLoad(() => post('/mutate'), { concurrency: 32, maxRequests: half * 10, maxSeconds: 12, ratePerSecond: half });
  console.log(formatRow([`half load, ${half}/s`, paced.requests, paced.errors, paced.perSecond, paced.p50Ms, paced.p99Ms]));
  const goal = saturated.perSecond >= 2000 && paced.p99Ms <= 2;
  console.log(`\nGoal ≥ 2,000/s with p99 ≤ 2 ms (at half load): ${goal ? 'met' : 'NOT met'}`);
  agent.destroy();
  await proc.stop();
}

async function throughApiServer(): Promise<void> {
  const cp = await startControlPlane();
  try {
    await installCrds(cp, [MODEL_SERVICE_CRD]);
    const certDir = join(cp.dir, 'webhook-certs');
    const { ca } = makeWebhookCertificates(cp.dir, certDir, 'bench');
    const port = await freePort();
    const webhook = startProcess(process.execPath, [CLI, 'webhook', '--port', String(port), '--host', '127.0.0.1', '--cert-dir', certDir], join(cp.dir, 'webhook.log'), { ...process.env, LOG_LEVEL: 'warn' });
    const kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfig);
    const objects = kc.makeApiClient(CustomObjectsApi);
    const core = kc.makeApiClient(CoreV1Api);
    const createAll = async (namespace: string) => {
      await core.createNamespace({ body: { metadata: { name: namespace } } });
      let next = 0;
      const t0 = performance.now();
      const worker = async () => {
        while (next < count) {
          const i = next++;
          await objects.createNamespacedCustomObject({
            group: 'modelplane.ai', version: 'v1alpha1', namespace, plural: 'modelservices',
            body: {
              apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService',
              metadata: { name: `ms-${i}` },
              spec: { endpoints: [{ weight: 1 }], affinity: i % 2 === 0 ? { type: 'PrefixHash' } : { type: 'Session', sessionHeader: 'X-Session-ID' } },
            },
          });
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      return (performance.now() - t0) / 1000;
    };
    // Warm the API server's CRD handling first, outside both measurements.
    await createAll('warmup');
    const without = await createAll('no-webhook');
    await registerWebhooks(cp, `https://127.0.0.1:${port}`, ca.certPem);
    await new Promise((r) => setTimeout(r, 2000));
    const withWebhooks = await createAll('with-webhook');
    await unregisterWebhooks(cp);
    const sample = await objects.getNamespacedCustomObject({ group: 'modelplane.ai', version: 'v1alpha1', namespace: 'with-webhook', plural: 'modelservices', name: 'ms-0' });
    const defaulted = (sample as { spec: { affinity: { prefixBytes?: number } } }).spec.affinity.prefixBytes === 1024;
    console.log(`\n## Through kube-apiserver v1.36: create ${count} ModelServices (8 concurrent clients)\n`);
    console.log(formatRow(['webhooks', 'seconds', 'per second']));
    console.log(formatRow(['---', '---', '---']));
    console.log(formatRow(['none registered', without, count / without]));
    console.log(formatRow(['mutating + validating', withWebhooks, count / withWebhooks]));
    const ratio = withWebhooks / without;
    console.log(`\nRatio with/without: ${ratio.toFixed(3)} (goal ≤ 1.10: ${ratio <= 1.1 ? 'met' : 'NOT met'}); webhook defaults seen on created objects: ${defaulted}`);
    await webhook.stop();
  } finally {
    await cp.stop();
  }
}

const dir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'mpa-bench-'));
console.log(`# Webhook benchmark — ${new Date().toISOString()}, Node ${process.version}, ${(await import('node:os')).cpus().length} cores`);
await webhookAlone(dir);
await throughApiServer();
