// Helpers of the reliability scenarios (test/reliability-*.int.test.ts): a
// fleet of ModelServices applied at once, the reconciler started from the CLI,
// convergence polled until it holds or a bound passes, and each scenario's
// figures printed as one `[reliability]` JSON line for bench/RELIABILITY.md.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { KubeObject } from '../../src/model-service.ts';
import { MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../../src/naming.ts';
import { GENERATED_KINDS, render } from '../../src/render.ts';
import { loadClusterAccess } from '../../reconciler/cluster-access.ts';
import { Informer } from '../../reconciler/informer.ts';
import { KubeClient } from '../../reconciler/kube.ts';
import { modelServiceFleet } from '../fixtures/model-service.ts';
import type { ControlPlane, Kubectl } from './control-plane.ts';
import { type Convergence, convergence, generatedObjects, isConverged, liveModelServices } from './generated.ts';
import { type ManagedProcess, startProcess } from './processes.ts';
import { CLI } from './webhook.ts';

export const RELIABILITY_IMAGE = 'registry.example/modelplane-affinity:reliability';
const OPTIONS = { extProcImage: RELIABILITY_IMAGE };
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Creates the namespace and applies `count` ModelServices (the benchmark's mix) in one kubectl call. */
export async function applyFleet(cp: ControlPlane, namespace: string, count: number): Promise<void> {
  await cp.kubectlOk(['create', 'namespace', namespace]);
  const file = join(cp.dir, `${namespace}-fleet.yaml`);
  writeFileSync(file, modelServiceFleet(count, namespace).map((o) => `---\n${stringify(o)}`).join(''));
  await cp.kubectlOk(['apply', '--server-side', '-f', file], { timeoutMs: 600_000 });
}

/** How many objects `count` ModelServices of the fleet generate. */
export const fleetObjects = (count: number): number => modelServiceFleet(count, 'any').reduce((n, ms) => n + render(ms, OPTIONS).objects.length, 0);

/** `modelplane-affinity <command>` against the control plane, logging to the bed's folder. */
export function startCli(cp: ControlPlane, name: string, args: string[], env: NodeJS.ProcessEnv = {}): ManagedProcess {
  return startProcess(process.execPath, [CLI, ...args], join(cp.dir, `${name}.log`), { ...process.env, KUBECONFIG: cp.kubeconfig, HOSTNAME: name, ...env });
}

/** The reconcile command with the scenarios' image, and whatever flags the scenario adds. */
export function startReconciler(cp: ControlPlane, name: string, args: string[], env: NodeJS.ProcessEnv = {}): ManagedProcess {
  return startCli(cp, name, ['reconcile', '--ext-proc-image', RELIABILITY_IMAGE, ...args], env);
}

/**
 * Resolves once at least `count` generated objects exist in the namespace,
 * seen through watches (the reconciler makes ~100 a second; polling with
 * kubectl would see the threshold seconds late, and a fault meant for the
 * middle of a run would land after its end). Resolves with the count then.
 */
export async function waitForObjects(cp: ControlPlane, namespace: string, count: number, timeoutMs: number, diagnose: () => string): Promise<number> {
  const client = new KubeClient(await loadClusterAccess({ KUBECONFIG: cp.kubeconfig }));
  const seen = new Set<string>();
  let reached: (n: number) => void = () => undefined;
  const done = new Promise<number>((resolve) => (reached = resolve));
  const informers = GENERATED_KINDS.map((kind) => {
    const informer = new Informer<KubeObject>(client, { ref: kind, kind: kind.kind, labelSelector: `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}` });
    informer.on('add', (o) => {
      if (o.metadata.namespace === namespace) seen.add(`${o.kind}/${o.metadata.name}`);
      if (seen.size >= count) reached(seen.size);
    });
    return informer;
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.all(informers.map((i) => i.start()));
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`only ${seen.size} of ${count} generated objects after ${timeoutMs} ms\n${diagnose()}`)), timeoutMs)));
    return await Promise.race([done, timeout]);
  } finally {
    clearTimeout(timer);
    for (const i of informers) await i.stop();
    client.close();
  }
}

const summary = (c: Convergence) =>
  `${c.present}/${c.expected} objects; missing ${c.missing.length}, drifted ${c.drifted.length}, orphans ${c.orphans.length}, bad owners ${c.badOwners.length}, not ready ${c.notReady.length}, conflicts ${c.conflicts.length}` +
  ` (first: ${[...c.missing, ...c.drifted, ...c.orphans, ...c.badOwners, ...c.notReady, ...c.conflicts].slice(0, 3).join(', ')})`;

/**
 * Polls every 2 s until the namespace holds exactly what render() asks for
 * and every ModelService reports AffinityReady=True; throws with what is
 * still wrong after `timeoutMs`. Returns when it held and the last check.
 */
export async function waitConverged(k: Kubectl, namespace: string, timeoutMs: number, diagnose: () => string): Promise<{ at: number; report: Convergence }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const report = convergence(await liveModelServices(k, namespace), await generatedObjects(k, namespace), OPTIONS);
    if (isConverged(report)) return { at: Date.now(), report };
    if (Date.now() > deadline) throw new Error(`not converged after ${timeoutMs} ms: ${summary(report)}\n${diagnose()}`);
    await sleep(2000);
  }
}

/** Each ModelService holds exactly one AffinityReady condition (a second writer or a lost update would show here). */
export async function duplicateConditions(k: Kubectl, namespace: string): Promise<string[]> {
  return (await liveModelServices(k, namespace))
    .filter((ms) => (ms.status?.conditions ?? []).filter((c) => c.type === 'AffinityReady').length !== 1)
    .map((ms) => `${namespace}/${ms.metadata.name}`);
}

/** JSON log lines of a process whose msg is `msg`. */
export function logLines(proc: ManagedProcess, msg: string): Record<string, unknown>[] {
  return proc
    .tail(1_000_000)
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === msg);
}

/** One scenario's figures, for bench/RELIABILITY.md. */
export function figures(scenario: string, values: Record<string, unknown>): void {
  process.stdout.write(`[reliability] ${JSON.stringify({ scenario, ...values })}\n`);
}
