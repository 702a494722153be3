// Reconciler benchmark (issue 5): 1,000 ModelServices (mixed types) created at
// once; time until every generated object exists with the rendered spec, vs.
// the time to create the same objects directly with kubectl in the same run,
// as a ratio. Also the reconciler's peak RSS and its CPU while nothing changes.
// Usage: npm run bench:reconciler  (node bench/reconciler.ts [--count 1000])
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { KubeObject, ModelService } from '../src/model-service.ts';
import { isSubset } from '../src/ownership.ts';
import { GENERATED_RESOURCES, render } from '../src/render.ts';
import { startControlPlane } from '../test/testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from '../test/testbed/crds.ts';
import { startProcess } from '../test/testbed/processes.ts';
import { CLI } from '../test/testbed/webhook.ts';
import { formatRow } from './stats.ts';

const count = Number(process.argv[process.argv.indexOf('--count') + 1] || 1000) || 1000;
const IMAGE = 'ghcr.io/modelplane/modelplane-affinity:bench';
const KINDS = GENERATED_RESOURCES.join(',');

function modelServices(namespace: string): ModelService[] {
  return Array.from({ length: count }, (_, i) => ({
    apiVersion: 'modelplane.ai/v1alpha1',
    kind: 'ModelService',
    metadata: { name: `ms-${i}`, namespace },
    spec: {
      endpoints: [{ weight: 1 }, { weight: 1 }],
      // 40% PrefixHash (5 objects each), 40% Session (1 object), 20% None (0 objects).
      affinity: i % 5 < 2 ? { type: 'PrefixHash' } : i % 5 < 4 ? { type: 'Session', sessionHeader: 'X-Session-ID' } : { type: 'None' },
    },
  }));
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime in clock ticks (100/s)
}

function peakRssMb(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmHWM:')) ?? '';
  return Number(line.replace(/\D+/g, '')) / 1024;
}

console.log(`# Reconciler benchmark — ${new Date().toISOString()}, Node ${process.version}, ${count} ModelServices`);
const cp = await startControlPlane();
try {
  await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
  const countObjects = async (namespace: string) =>
    (await cp.kubectlOk(['get', KINDS, '-n', namespace, '-l', 'app.kubernetes.io/managed-by=modelplane-affinity', '-o', 'name'], { timeoutMs: 120_000 }))
      .split('\n')
      .filter(Boolean).length;

  // Baseline: the same generated objects created directly by kubectl (server-side apply, one process).
  await cp.kubectlOk(['create', 'namespace', 'direct']);
  const direct = modelServices('direct').flatMap((ms) => render(ms, { extProcImage: IMAGE }).objects);
  const directFile = join(cp.dir, 'direct.yaml');
  writeFileSync(directFile, direct.map((o: KubeObject) => `---\n${stringify(o)}`).join(''));
  const t0 = performance.now();
  await cp.kubectlOk(['apply', '--server-side', '-f', directFile], { timeoutMs: 900_000 });
  const directSeconds = (performance.now() - t0) / 1000;

  // Reconciler: the ModelServices are created at once; it generates the objects.
  await cp.kubectlOk(['create', 'namespace', 'reconciled']);
  const reconciler = startProcess(process.execPath, [CLI, 'reconcile', '--ext-proc-image', IMAGE, '--no-leader-elect'], join(cp.dir, 'reconciler.log'), {
    ...process.env,
    KUBECONFIG: cp.kubeconfig,
    LOG_LEVEL: 'warn',
    // The heap settings the manager Deployment runs with (MANAGER_NODE_OPTIONS env overrides them here).
    NODE_OPTIONS: process.env.MANAGER_NODE_OPTIONS ?? '',
  });
  const pid = reconciler.child.pid as number;
  await new Promise((r) => setTimeout(r, 3000)); // informers listed
  const msFile = join(cp.dir, 'ms.yaml');
  writeFileSync(msFile, modelServices('reconciled').map((o) => `---\n${stringify(o)}`).join(''));
  const t1 = performance.now();
  await cp.kubectlOk(['apply', '--server-side', '-f', msFile], { timeoutMs: 900_000 });
  const deadline = Date.now() + 15 * 60_000;
  let seen = 0;
  while (Date.now() < deadline && (seen = await countObjects('reconciled')) < direct.length) await new Promise((r) => setTimeout(r, 500));
  const reconciledSeconds = (performance.now() - t1) / 1000;
  // "Matches": spot-check that live specs equal the rendered ones for a sample of each type.
  let mismatches = 0;
  for (const i of [0, 1, 2, 3, count - 1]) {
    const rendered = render(modelServices('reconciled')[i] as ModelService, { extProcImage: IMAGE }).objects;
    for (const o of rendered) {
      const live = JSON.parse(await cp.kubectlOk(['get', `${o.kind.toLowerCase()}`, String(o.metadata.name), '-n', 'reconciled', '-o', 'json'])) as KubeObject;
      if (!isSubset(o.spec, live.spec)) mismatches++;
    }
  }
  const rss = peakRssMb(pid);
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
  console.log(`Reconciler peak RSS: ${rss.toFixed(1)} MB (goal ≤ 120 MB: ${rss <= 120 ? 'met' : 'NOT met'})`);
  console.log(`Reconciler CPU while nothing changes (${idleWindow}s window): ${(idleCpu * 100).toFixed(2)}% of one core`);
} finally {
  await cp.stop();
}
