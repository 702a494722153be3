// Reconciler benchmark (issue 5): 1,000 ModelServices (mixed types) created at
// once; time until every generated object exists with the rendered spec, vs.
// the time to create the same objects directly with kubectl in the same run,
// as a ratio. Also the reconciler's peak RSS and its CPU while nothing changes.
// Usage: npm run bench:reconciler  (node bench/reconciler.ts [--count 1000])
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { KubeObject, ModelService } from '../src/model-service.ts';
import { isSubset } from '../src/ownership.ts';
import { GENERATED_KINDS, GENERATED_RESOURCES, render } from '../src/render.ts';
import { loadClusterAccess } from '../reconciler/cluster-access.ts';
import { Informer } from '../reconciler/informer.ts';
import { KubeClient } from '../reconciler/kube.ts';
import { DEFAULT_WORKERS } from '../reconciler/queue.ts';
import { startControlPlane } from '../test/testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from '../test/testbed/crds.ts';
import { startProcess } from '../test/testbed/processes.ts';
import { builtCli } from '../test/testbed/webhook.ts';
import { generatedObjects } from '../test/testbed/generated.ts';
import { modelServiceFleet } from '../test/fixtures/model-service.ts';
import { cpuSeconds, formatRow, memoryMiB, samples } from './stats.ts';
import { managerEnv } from './manager-env.ts';

const count = Number(process.argv[process.argv.indexOf('--count') + 1] || 1000) || 1000;
const IMAGE = 'ghcr.io/modelplane/modelplane-affinity:bench';
const KINDS = GENERATED_RESOURCES.join(',');

const modelServices = (namespace: string): ModelService[] => modelServiceFleet(count, namespace);

console.log(`# Reconciler benchmark — ${new Date().toISOString()}, Node ${process.version}, ${count} ModelServices`);
const cp = await startControlPlane();
try {
  await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
  /** apiserver_request_total summed by verb and resource (watches and the metrics scrape itself included). */
  const apiRequests = async (): Promise<Map<string, number>> => {
    const counts = new Map<string, number>();
    for (const { labels, value } of samples(await cp.kubectlOk(['get', '--raw', '/metrics'], { timeoutMs: 60_000 }), 'apiserver_request_total')) {
      const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ''}`;
      counts.set(key, (counts.get(key) ?? 0) + value);
    }
    return counts;
  };
  const subtractCounts = (after: Map<string, number>, before: Map<string, number>) =>
    new Map([...after].map(([k, n]) => [k, n - (before.get(k) ?? 0)] as const).filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]));
  const countObjects = async (namespace: string) => (await generatedObjects(cp, namespace)).length;

  // Baseline: the same generated objects created directly by kubectl (server-side apply, one process).
  await cp.kubectlOk(['create', 'namespace', 'direct']);
  const direct = modelServices('direct').flatMap((ms) => render(ms, { extProcImage: IMAGE }).objects);
  const directFile = join(cp.dir, 'direct.yaml');
  writeFileSync(directFile, direct.map((o: KubeObject) => `---\n${stringify(o)}`).join(''));
  const t0 = performance.now();
  await cp.kubectlOk(['apply', '--server-side', '-f', directFile], { timeoutMs: 900_000 });
  const directSeconds = (performance.now() - t0) / 1000;

  // The baseline's objects carry the generated label: gone before the
  // reconciler starts, so its caches hold what a cluster with these 1,000
  // ModelServices holds, not twice that.
  await cp.kubectlOk(['delete', KINDS, '-n', 'direct', '--all', '--wait=false'], { timeoutMs: 600_000 });
  while ((await countObjects('direct')) > 0) await new Promise((r) => setTimeout(r, 500));

  // Reconciler: the ModelServices are created at once; it generates the objects.
  await cp.kubectlOk(['create', 'namespace', 'reconciled']);
  const environment = managerEnv();
  const reconciler = startProcess(process.execPath, [builtCli(), 'reconcile', '--ext-proc-image', IMAGE, '--no-leader-elect', ...(process.env.RECONCILER_WORKERS ? ['--workers', process.env.RECONCILER_WORKERS] : [])], join(cp.dir, 'reconciler.log'), {
    ...process.env,
    KUBECONFIG: cp.kubeconfig,
    LOG_LEVEL: 'warn',
    // The runtime settings the manager Deployment runs with (MANAGER_NODE_OPTIONS overrides NODE_OPTIONS here).
    ...environment,
  });
  const pid = reconciler.child.pid as number;
  await new Promise((r) => setTimeout(r, 3000)); // informers listed
  const startedRss = memoryMiB(pid, 'VmRSS');
  const msFile = join(cp.dir, 'ms.yaml');
  writeFileSync(msFile, modelServices('reconciled').map((o) => `---\n${stringify(o)}`).join(''));
  // Completion is seen through watches, not by listing every 500 ms: 2,400
  // objects listed twice a second would load the API server being measured.
  const watcher = new KubeClient(await loadClusterAccess({ KUBECONFIG: cp.kubeconfig }));
  let created = 0;
  let lastCreatedAt = 0;
  let allCreated: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (allCreated = resolve));
  const informers = GENERATED_KINDS.map((kind) => {
    const informer = new Informer<KubeObject>(watcher, { ref: kind, kind: kind.kind, labelSelector: 'app.kubernetes.io/managed-by=modelplane-affinity' });
    informer.on('add', () => {
      lastCreatedAt = performance.now();
      if (++created >= direct.length) allCreated();
    });
    informer.on('error', (error) => console.error(`watch ${kind.plural}: ${error.message}`));
    return informer;
  });
  // Listed (nothing yet) and watching from the list's resourceVersion: no creation is missed.
  await Promise.all(informers.map((informer) => informer.start()));
  const requestsBefore = await apiRequests();
  const cpuBefore = cpuSeconds(pid);
  const t1 = performance.now();
  await cp.kubectlOk(['apply', '--server-side', '-f', msFile], { timeoutMs: 900_000 });
  const modelServicesAppliedSeconds = (performance.now() - t1) / 1000;
  // Bounded wait; the timer is cleared, or it would keep the script alive for 15 minutes after the report.
  let deadline: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise((r) => (deadline = setTimeout(r, 15 * 60_000)))]);
  clearTimeout(deadline);
  for (const informer of informers) await informer.stop();
  watcher.close();
  const reconcilerCpu = cpuSeconds(pid) - cpuBefore;
  const requestsDuring = subtractCounts(await apiRequests(), requestsBefore);
  const seen = await countObjects('reconciled');
  const reconciledSeconds = (lastCreatedAt - t1) / 1000;
  // "Matches": spot-check that live specs equal the rendered ones for a sample of each type.
  let mismatches = 0;
  for (const i of [0, 1, 2, 3, count - 1]) {
    const rendered = render(modelServices('reconciled')[i] as ModelService, { extProcImage: IMAGE }).objects;
    for (const o of rendered) {
      const live = JSON.parse(await cp.kubectlOk(['get', `${o.kind.toLowerCase()}`, String(o.metadata.name), '-n', 'reconciled', '-o', 'json'])) as KubeObject;
      if (!isSubset(o.spec, live.spec)) mismatches++;
    }
  }
  const rss = memoryMiB(pid, 'VmHWM');
  await new Promise((r) => setTimeout(r, 5000)); // let the last status writes settle
  const c0 = cpuSeconds(pid);
  const idleWindow = 30;
  await new Promise((r) => setTimeout(r, idleWindow * 1000));
  const idleCpu = (cpuSeconds(pid) - c0) / idleWindow;
  await reconciler.stop();

  console.log(`\n${direct.length} generated objects (${count} ModelServices: 40% PrefixHash, 40% Session, 20% None)\n`);
  console.log(formatRow(['path', 'seconds', 'objects']));
  console.log(formatRow(['---', '---', '---']));
  console.log(formatRow(['kubectl apply --server-side of the rendered objects (baseline)', directSeconds, direct.length]));
  console.log(formatRow(['ModelServices applied, reconciler generates the objects', reconciledSeconds, seen]));
  const ratio = reconciledSeconds / directSeconds;
  console.log(`\nRatio reconciler/direct: ${ratio.toFixed(2)} (goal ≤ 1.3: ${ratio <= 1.3 ? 'met' : 'NOT met'}); spec mismatches in sample: ${mismatches}`);
  console.log(`Reconciler peak RSS: ${rss.toFixed(1)} MB (goal ≤ 120 MB: ${rss <= 120 ? 'met' : 'NOT met'}); ${startedRss.toFixed(1)} MB once started, before the ModelServices; environment from the manager Deployment: ${JSON.stringify(environment)}`);
  console.log(`kubectl had applied the ${count} ModelServices after ${modelServicesAppliedSeconds.toFixed(2)} s; workers: ${process.env.RECONCILER_WORKERS ?? `${DEFAULT_WORKERS} (default)`}`);
  console.log(`Reconciler CPU from applying the ModelServices to the last object created: ${reconcilerCpu.toFixed(1)} s`);
  console.log(`API server requests from applying the ModelServices to the last object created: ${[...requestsDuring].filter(([, n]) => n >= 10).map(([k, n]) => `${k} ${n}`).join(', ')}`);
  console.log(`Reconciler CPU while nothing changes (${idleWindow}s window): ${(idleCpu * 100).toFixed(2)}% of one core`);
} finally {
  await cp.stop();
}
