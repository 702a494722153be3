// Admission webhook benchmarks (issue 3):
//  1. the webhook alone, pinned to one core: AdmissionReviews/s at saturation
//     over keep-alive HTTPS, and p50/p99 at half that rate;
//  2. through a real kube-apiserver: creating 500 ModelServices with the
//     webhooks registered vs. with none, in the same run, as a ratio; with
//     two floors in the same alternating rounds: a webhook that does no work
//     (bench/null-webhook.ts) registered twice as ours is, and once (mutating
//     only). They show what calling a webhook at all costs the API server.
// Usage: npm run bench:webhook   (node bench/webhook.ts [--count 500])
import { execFileSync } from 'node:child_process';
import * as https from 'node:https';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { loadClusterAccess } from '../reconciler/cluster-access.ts';
import { KubeClient } from '../reconciler/kube.ts';
import { startControlPlane } from '../test/testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, installCrds } from '../test/testbed/crds.ts';
import { startProcess, freePort, waitFor } from '../test/testbed/processes.ts';
import { MUTATING_WEBHOOK_NAME, VALIDATING_WEBHOOK_NAME, builtCli, makeWebhookCertificates, registerWebhooks, unregisterWebhooks, type WebhookRegistrations } from '../test/testbed/webhook.ts';
import { type GoToolsModule, ensureGoTools } from '../test/testbed/go-tools.ts';
import { formatRow, median, sampleSum } from './stats.ts';
import { managerEnv } from './manager-env.ts';

const count = Number(process.argv[process.argv.indexOf('--count') + 1] || 500) || 500;
const ROUNDS = 5;

/** hey (Go, built from tools/loadgen): keep-alive HTTPS load, fixed rate per worker, latency percentiles. */
const LOADGEN_TOOLS: GoToolsModule = { module: 'loadgen', binaries: [{ name: 'hey', pkg: 'github.com/rakyll/hey' }] };

interface HeyResult {
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  ok: number;
  other: number;
}

function hey(bin: string, url: string, body: string, args: string[]): HeyResult {
  // The load generator gets core 1; the webhook has core 0.
  const out = execFileSync('taskset', ['-c', '1', join(bin, 'hey'), ...args, '-m', 'POST', '-T', 'application/json', '-D', body, url], { encoding: 'utf8' });
  const num = (re: RegExp) => Number(re.exec(out)?.[1] ?? Number.NaN);
  const statuses = [...out.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)];
  const ok = statuses.filter((m) => m[1] === '200').reduce((a, m) => a + Number(m[2]), 0);
  const all = statuses.reduce((a, m) => a + Number(m[2]), 0);
  const errors = num(/Error distribution:[\s\S]*?\[(\d+)\]/);
  return {
    perSecond: num(/Requests\/sec:\s+([\d.]+)/),
    p50Ms: num(/50%+ in ([\d.]+) secs/) * 1000,
    p99Ms: num(/99%+ in ([\d.]+) secs/) * 1000,
    ok,
    other: all - ok + (Number.isNaN(errors) ? 0 : errors),
  };
}

async function webhookAlone(dir: string): Promise<void> {
  const bin = await ensureGoTools(LOADGEN_TOOLS);
  const certDir = join(dir, 'bench-certs');
  makeWebhookCertificates(dir, certDir, 'bench');
  const port = await freePort();
  const proc = startProcess('taskset', ['-c', '0', process.execPath, cli, 'webhook', '--port', String(port), '--host', '127.0.0.1', '--cert-dir', certDir], join(dir, 'bench-webhook.log'), {
    ...process.env,
    ...environment,
    LOG_LEVEL: 'warn',
  });
  const url = `https://127.0.0.1:${port}/mutate`;
  const body = fileURLToPath(new URL('../test/fixtures/admission/create-prefixhash.json', import.meta.url));
  await waitFor('bench webhook', async () => hey(bin, url, body, ['-n', '10', '-c', '1']).ok === 10, 20_000, () => proc.tail());
  hey(bin, url, body, ['-z', '5s', '-c', '16']); // warm-up (JIT)
  console.log('\n## Webhook alone (pinned to one core; hey on the other core; keep-alive HTTPS; /mutate with a PrefixHash ModelService)\n');
  console.log(formatRow(['load', 'connections', 'ok', 'errors', 'per second', 'p50 ms', 'p99 ms']));
  console.log(formatRow(['---', '---', '---', '---', '---', '---', '---']));
  const saturated = hey(bin, url, body, ['-z', '10s', '-c', '32']);
  const rows: [string, string, HeyResult][] = [['saturation', '32', saturated], ['one connection, back to back', '1', hey(bin, url, body, ['-z', '10s', '-c', '1'])]];
  const half = Math.round(saturated.perSecond / 2 / 8);
  rows.push([`half load, ${half * 8}/s`, '8', hey(bin, url, body, ['-z', '10s', '-c', '8', '-q', String(half)])]);
  const atGoal = hey(bin, url, body, ['-z', '10s', '-c', '8', '-q', '250']);
  rows.push(['goal load, 2000/s', '8', atGoal]);
  for (const [load, connections, r] of rows) console.log(formatRow([load, connections, r.ok, r.other, r.perSecond, r.p50Ms, r.p99Ms]));
  const goal = saturated.perSecond >= 2000 && atGoal.p99Ms <= 2;
  console.log(`\nGoal ≥ 2,000/s with p99 ≤ 2 ms (at 2,000/s): ${goal ? 'met' : 'NOT met'}`);
  await proc.stop();
}

async function throughApiServer(): Promise<void> {
  const cp = await startControlPlane();
  try {
    await installCrds(cp, [MODEL_SERVICE_CRD]);
    const certDir = join(cp.dir, 'webhook-certs');
    const { ca } = makeWebhookCertificates(cp.dir, certDir, 'bench');
    const port = await freePort();
    const webhook = startProcess(process.execPath, [cli, 'webhook', '--port', String(port), '--host', '127.0.0.1', '--cert-dir', certDir], join(cp.dir, 'webhook.log'), { ...process.env, ...environment, LOG_LEVEL: 'warn' });
    // The floor: a webhook that does no work, registered the same way (see bench/null-webhook.ts).
    const nullPort = await freePort();
    const nullWebhook = startProcess(process.execPath, [fileURLToPath(new URL('./null-webhook.ts', import.meta.url)), String(nullPort), certDir], join(cp.dir, 'null-webhook.log'), { ...process.env, ...environment });
    await waitFor('do-nothing webhook', async () => nullWebhook.tail().includes('listening'), 20_000, () => nullWebhook.tail());
    // Keep-alive connections, as kubectl and controllers use them. (client-node
    // 2.0.1 opened a TLS connection per request here: 20% of the API server's
    // CPU went to handshakes, which made every create dearer and the webhooks'
    // share smaller.)
    const client = new KubeClient(await loadClusterAccess({ KUBECONFIG: cp.kubeconfig }));
    const createAll = async (namespace: string, clients: number) => {
      await client.create({ apiVersion: 'v1', plural: 'namespaces' }, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
      let next = 0;
      const t0 = performance.now();
      const worker = async () => {
        while (next < count) {
          const i = next++;
          await client.create(
            { apiVersion: 'modelplane.ai/v1alpha1', namespace, plural: 'modelservices' },
            {
              apiVersion: 'modelplane.ai/v1alpha1', kind: 'ModelService',
              metadata: { name: `ms-${i}` },
              spec: { endpoints: [{ weight: 1 }], affinity: i % 2 === 0 ? { type: 'PrefixHash' } : { type: 'Session', sessionHeader: 'X-Session-ID' } },
            },
          );
        }
      };
      await Promise.all(Array.from({ length: clients }, worker));
      return (performance.now() - t0) / 1000;
    };
    // Warm the API server's CRD handling first, outside both measurements; then
    // alternate without/with ROUNDS times and take medians, so drift hits both alike.
    // Two shapes of load: 8 concurrent clients (a controller or a CI job
    // applying in parallel; CPU-bound on this machine), and one client creating
    // one object after the other, as `kubectl apply -f dir/` does (latency-bound).
    await createAll('warmup', 8);
    // The API server times each webhook call, by webhook name; the do-nothing
    // webhook is registered under the same names, so ours is read as the
    // difference across our runs only.
    const apiSeries = 'apiserver_admission_webhook_admission_duration_seconds';
    const apiCallTotals = async () => {
      const text = await cp.kubectlOk(['get', '--raw', '/metrics']);
      const total = (name: string, part: 'sum' | 'count') => sampleSum(text, `${apiSeries}_${part}`, { name, operation: 'CREATE' });
      return [MUTATING_WEBHOOK_NAME, VALIDATING_WEBHOOK_NAME].map((name) => ({ seconds: total(name, 'sum'), calls: total(name, 'count') }));
    };
    const oursSeenByApiServer = [MUTATING_WEBHOOK_NAME, VALIDATING_WEBHOOK_NAME].map(() => ({ seconds: 0, calls: 0 }));
    const ratios: string[] = [];
    for (const clients of [8, 1]) {
      const withoutRuns: number[] = [];
      const nullRuns: number[] = [];
      const nullMutatingRuns: number[] = [];
      const withRuns: number[] = [];
      const createWith = async (baseUrl: string, namespace: string, registrations?: WebhookRegistrations) => {
        await registerWebhooks(cp, baseUrl, ca.certPem, registrations);
        await new Promise((r) => setTimeout(r, 2000));
        const seconds = await createAll(namespace, clients);
        await unregisterWebhooks(cp);
        await new Promise((r) => setTimeout(r, 2000));
        return seconds;
      };
      for (let round = 0; round < ROUNDS; round++) {
        withoutRuns.push(await createAll(`no-webhook-${clients}-${round}`, clients));
        nullRuns.push(await createWith(`https://127.0.0.1:${nullPort}`, `null-webhook-${clients}-${round}`));
        nullMutatingRuns.push(await createWith(`https://127.0.0.1:${nullPort}`, `null-mutating-${clients}-${round}`, 'mutating only'));
        const before = await apiCallTotals();
        withRuns.push(await createWith(`https://127.0.0.1:${port}`, `with-webhook-${clients}-${round}`));
        (await apiCallTotals()).forEach((after, i) => {
          const tally = oursSeenByApiServer[i] as { seconds: number; calls: number };
          tally.seconds += after.seconds - (before[i]?.seconds ?? 0);
          tally.calls += after.calls - (before[i]?.calls ?? 0);
        });
      }
      const without = median(withoutRuns);
      const withNull = median(nullRuns);
      const withNullMutating = median(nullMutatingRuns);
      const withWebhooks = median(withRuns);
      const ratio = withWebhooks / without;
      const seconds = (runs: number[]) => `${runs.map((x) => x.toFixed(2)).join(', ')} s`;
      console.log(`\n## Through kube-apiserver v1.36: create ${count} ModelServices, ${clients === 1 ? 'one client, one create after the other' : `${clients} concurrent clients`} (median of ${ROUNDS} alternating rounds)\n`);
      console.log(`rounds without: ${seconds(withoutRuns)}; do-nothing webhooks: ${seconds(nullRuns)}; do-nothing mutating only: ${seconds(nullMutatingRuns)}; ours: ${seconds(withRuns)}\n`);
      console.log(formatRow(['webhooks registered', 'seconds', 'per second', 'ratio to none']));
      console.log(formatRow(['---', '---', '---', '---']));
      console.log(formatRow(['none registered', without, count / without, 1]));
      console.log(formatRow(['do-nothing mutating webhook only (floor for one call per create)', withNullMutating, count / withNullMutating, withNullMutating / without]));
      console.log(formatRow(['do-nothing mutating + validating webhooks (floor for two calls: allowed, no patch)', withNull, count / withNull, withNull / without]));
      console.log(formatRow(['ours, mutating + validating', withWebhooks, count / withWebhooks, ratio]));
      console.log(`\nRatio with/without: ${ratio.toFixed(3)} (goal ≤ 1.10: ${ratio <= 1.1 ? 'met' : 'NOT met'}); ours / do-nothing: ${(withWebhooks / withNull).toFixed(3)}`);
      ratios.push(`${clients} client${clients === 1 ? '' : 's'}: ${ratio.toFixed(3)}`);
    }
    const sample = await client.get({ apiVersion: 'modelplane.ai/v1alpha1', namespace: 'with-webhook-8-0', plural: 'modelservices', name: 'ms-0' });
    const defaulted = (sample as { spec: { affinity: { prefixBytes?: number } } }).spec.affinity.prefixBytes === 1024;
    console.log(`\nRatios with/without (goal ≤ 1.10): ${ratios.join('; ')}; webhook defaults seen on created objects: ${defaulted}`);
    const metrics = await new Promise<string>((resolve) => {
      https.get(`https://127.0.0.1:${port}/metrics`, { rejectUnauthorized: false }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve(text));
      });
    });
    const connections = sampleSum(metrics, 'modelplane_affinity_webhook_tls_connections_total');
    const reviews = sampleSum(metrics, 'modelplane_affinity_admission_requests_total');
    console.log(`Webhook: ${reviews} AdmissionReviews over ${connections} TLS connections from the API server`);
    // Where a call's time goes: the API server's own timing of each webhook
    // call against our handler's (body parsed → answer written), means over all rounds.
    const meanMs = (text: string, series: string, match: Record<string, string>) => (1000 * sampleSum(text, `${series}_sum`, match)) / sampleSum(text, `${series}_count`, match);
    const [mutatingSeen, validatingSeen] = oursSeenByApiServer.map((t) => (1000 * t.seconds) / t.calls);
    const ourSeries = 'modelplane_affinity_admission_duration_seconds';
    console.log(
      `Mean time per call to ours, seen by the API server: mutating ${(mutatingSeen as number).toFixed(2)} ms, validating ${(validatingSeen as number).toFixed(2)} ms; ` +
        `in our handler: /mutate ${meanMs(metrics, ourSeries, { path: 'mutate' }).toFixed(2)} ms, /validate ${meanMs(metrics, ourSeries, { path: 'validate' }).toFixed(2)} ms`,
    );
    await webhook.stop();
    await nullWebhook.stop();
    client.close();
  } finally {
    await cp.stop();
  }
}

const cli = builtCli();
// The manager Deployment's environment: in a cluster the webhook runs inside `manager` with it.
const environment = managerEnv();
const dir = (await import('node:fs')).mkdtempSync(join((await import('node:os')).tmpdir(), 'mpa-bench-'));
console.log(`# Webhook benchmark — ${new Date().toISOString()}, Node ${process.version}, ${(await import('node:os')).cpus().length} cores`);
if (!process.argv.includes('--api-server-only')) await webhookAlone(dir);
await throughApiServer();
