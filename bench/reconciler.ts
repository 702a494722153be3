// Reconciler benchmark (issue 5): 1,000 ModelServices (mixed types) created at
// once; time until every generated object exists with the rendered spec, vs.
// the time to create the same objects directly with kubectl, as a ratio. Also
// the reconciler's CPU, peak RSS and its CPU while nothing changes.
// The two paths run in alternating pairs on one control plane (direct first
// in even pairs, the reconciler first in odd ones), each in a namespace of
// its own that is emptied after it, so each starts from the same cluster;
// the ratio is taken within each pair (the shared machine's speed drifts
// between pairs far more than within one) and its median over pairs is the
// verdict.
// Usage: npm run bench:reconciler  (node bench/reconciler.ts [--count 1000] [--pairs 2])
import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
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
import { alternatingRunsAsync, cpuSeconds, formatRow, median, memoryMiB, samples } from './stats.ts';
import { managerEnv } from './manager-env.ts';

const option = (name: string, fallback: number) => (process.argv.includes(name) ? Number(process.argv[process.argv.indexOf(name) + 1]) || fallback : fallback);
const count = option('--count', 1000);
const PAIRS = option('--pairs', 2);
const IMAGE = 'ghcr.io/modelplane/modelplane-affinity:bench';
const KINDS = GENERATED_RESOURCES.join(',');
const RATIO_GOAL = 1.3;
const RSS_GOAL_MB = 120;
const IDLE_WINDOW_S = 30;

const modelServices = (namespace: string): ModelService[] => modelServiceFleet(count, namespace);
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

interface DirectRun {
  seconds: number;
  objects: number;
}

interface ReconcilerRun {
  seconds: number;
  objects: number;
  mismatches: number;
  modelServicesAppliedSeconds: number;
  cpuSeconds: number;
  peakRssMb: number;
  startedRssMb: number;
  idleCpu: number;
  requests: Map<string, number>;
}

console.log(`# Reconciler benchmark — ${new Date().toISOString()}, Node ${process.version}, ${count} ModelServices, ${PAIRS} alternating pairs; load average ${load()}`);
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
  /**
   * Deletes what a run left in its namespace (without kube-controller-manager
   * nothing collects owned objects), so the next run's caches hold what a
   * cluster with these 1,000 ModelServices holds, not twice that.
   */
  const empty = async (namespace: string) => {
    await cp.kubectlOk(['delete', `modelservices.modelplane.ai,${KINDS}`, '-n', namespace, '--all', '--wait=false'], { timeoutMs: 600_000 });
    const deadline = Date.now() + 600_000;
    const left = async () => (await countObjects(namespace)) + (await cp.kubectlOk(['get', 'modelservices.modelplane.ai', '-n', namespace, '-o', 'name'])).split('\n').filter(Boolean).length;
    while ((await left()) > 0) {
      if (Date.now() > deadline) throw new Error(`${namespace}: ModelServices or generated objects still there after 10 minutes`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  const environment = managerEnv();

  /** Baseline: the same generated objects created directly by kubectl (server-side apply, one process). */
  const directRun = async (namespace: string): Promise<DirectRun> => {
    await cp.kubectlOk(['create', 'namespace', namespace]);
    const direct = modelServices(namespace).flatMap((ms) => render(ms, { extProcImage: IMAGE }).objects);
    const directFile = join(cp.dir, `${namespace}.yaml`);
    writeFileSync(directFile, direct.map((o: KubeObject) => `---\n${stringify(o)}`).join(''));
    const t0 = performance.now();
    await cp.kubectlOk(['apply', '--server-side', '-f', directFile], { timeoutMs: 900_000 });
    const seconds = (performance.now() - t0) / 1000;
    const objects = await countObjects(namespace);
    await empty(namespace);
    return { seconds, objects };
  };

  /** Reconciler: the ModelServices are created at once; it generates the objects. */
  const reconcilerRun = async (namespace: string): Promise<ReconcilerRun> => {
    await cp.kubectlOk(['create', 'namespace', namespace]);
    const expected = modelServices(namespace).flatMap((ms) => render(ms, { extProcImage: IMAGE }).objects).length;
    const reconciler = startProcess(process.execPath, [builtCli(), 'reconcile', '--ext-proc-image', IMAGE, '--no-leader-elect', ...(process.env.RECONCILER_WORKERS ? ['--workers', process.env.RECONCILER_WORKERS] : [])], join(cp.dir, `reconciler-${namespace}.log`), {
      ...process.env,
      KUBECONFIG: cp.kubeconfig,
      LOG_LEVEL: 'warn',
      // The runtime settings the manager Deployment runs with (MANAGER_NODE_OPTIONS overrides NODE_OPTIONS here).
      ...environment,
    });
    try {
      const pid = reconciler.child.pid as number;
      await new Promise((r) => setTimeout(r, 3000)); // informers listed
      const startedRssMb = memoryMiB(pid, 'VmRSS');
      const msFile = join(cp.dir, `ms-${namespace}.yaml`);
      writeFileSync(msFile, modelServices(namespace).map((o) => `---\n${stringify(o)}`).join(''));
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
          if (++created >= expected) allCreated();
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
      const requests = subtractCounts(await apiRequests(), requestsBefore);
      const objects = await countObjects(namespace);
      const seconds = (lastCreatedAt - t1) / 1000;
      // "Matches": spot-check that live specs equal the rendered ones for a sample of each type.
      let mismatches = 0;
      for (const i of [0, 1, 2, 3, count - 1]) {
        const rendered = render(modelServices(namespace)[i] as ModelService, { extProcImage: IMAGE }).objects;
        for (const o of rendered) {
          const live = JSON.parse(await cp.kubectlOk(['get', `${o.kind.toLowerCase()}`, String(o.metadata.name), '-n', namespace, '-o', 'json'])) as KubeObject;
          if (!isSubset(o.spec, live.spec)) mismatches++;
        }
      }
      const peakRssMb = memoryMiB(pid, 'VmHWM');
      await new Promise((r) => setTimeout(r, 5000)); // let the last status writes settle
      const c0 = cpuSeconds(pid);
      await new Promise((r) => setTimeout(r, IDLE_WINDOW_S * 1000));
      const idleCpu = (cpuSeconds(pid) - c0) / IDLE_WINDOW_S;
      return { seconds, objects, mismatches, modelServicesAppliedSeconds, cpuSeconds: reconcilerCpu, peakRssMb, startedRssMb, idleCpu, requests };
    } finally {
      await reconciler.stop();
      await empty(namespace);
    }
  };

  const pairs: Array<{ first: string; loadAverage: string; direct: DirectRun; reconciler: ReconcilerRun }> = [];
  for (let pair = 0; pair < PAIRS; pair++) {
    const ran: string[] = [];
    const [direct, reconciler] = (await alternatingRunsAsync(pair, ['direct', 'reconciler'], (path) => {
      ran.push(path);
      return path === 'direct' ? directRun(`direct-${pair + 1}`) : reconcilerRun(`reconciled-${pair + 1}`);
    })) as [DirectRun, ReconcilerRun];
    pairs.push({ first: ran[0] as string, loadAverage: load(), direct, reconciler });
    console.error(`pair ${pair + 1} (${ran[0]} first, load ${load()}): direct ${direct.seconds.toFixed(2)} s, reconciler ${reconciler.seconds.toFixed(2)} s, ratio ${(reconciler.seconds / direct.seconds).toFixed(2)}`);
  }

  console.log(`\n${pairs[0]?.direct.objects} generated objects (${count} ModelServices: 40% PrefixHash, 40% Session, 20% None); workers: ${process.env.RECONCILER_WORKERS ?? `${DEFAULT_WORKERS} (default)`}\n`);
  console.log(formatRow(['pair', 'first', 'load average after', 'kubectl apply --server-side of the rendered objects (baseline) s', 'ModelServices applied, reconciler generates the objects s', 'objects (direct / reconciler)', 'ratio', 'reconciler CPU s', 'peak RSS MB', 'RSS once started MB', 'idle CPU', 'spec mismatches in sample']));
  console.log(formatRow(Array.from({ length: 12 }, () => '---')));
  for (const [i, p] of pairs.entries()) {
    const r = p.reconciler;
    console.log(
      formatRow([i + 1, p.first, p.loadAverage, p.direct.seconds, r.seconds, `${p.direct.objects} / ${r.objects}`, r.seconds / p.direct.seconds, r.cpuSeconds, r.peakRssMb, r.startedRssMb, `${(r.idleCpu * 100).toFixed(2)}%`, r.mismatches]),
    );
  }
  const ratios = pairs.map((p) => p.reconciler.seconds / p.direct.seconds);
  const ratio = median(ratios);
  const rss = Math.max(...pairs.map((p) => p.reconciler.peakRssMb));
  console.log(`\nRatio reconciler/direct: median ${ratio.toFixed(2)} over ${pairs.length} pairs (${ratios.map((x) => x.toFixed(2)).join(', ')}); goal ≤ ${RATIO_GOAL}: ${ratio <= RATIO_GOAL ? 'met' : 'NOT met'}`);
  console.log(`Reconciler peak RSS: at most ${rss.toFixed(1)} MB (goal ≤ ${RSS_GOAL_MB} MB: ${rss <= RSS_GOAL_MB ? 'met' : 'NOT met'}); environment from the manager Deployment: ${JSON.stringify(environment)}`);
  for (const [i, p] of pairs.entries()) {
    const r = p.reconciler;
    console.log(
      `Pair ${i + 1}: kubectl had applied the ${count} ModelServices after ${r.modelServicesAppliedSeconds.toFixed(2)} s; reconciler CPU while nothing changes (${IDLE_WINDOW_S}s window) ${(r.idleCpu * 100).toFixed(2)}% of one core; ` +
        `API server requests from applying the ModelServices to the last object created: ${[...r.requests].filter(([, n]) => n >= 10).map(([k, n]) => `${k} ${n}`).join(', ')}`,
    );
  }
} finally {
  await cp.stop();
}
