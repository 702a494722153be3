// Reliability of the reconciler when the API server fails it, on control
// planes of their own: kube-apiserver stopped for 15 s mid-convergence and
// started again on the same port (re-list, converge, no restart, /readyz shows
// the outage); and an API server that answers 429 (a small
// --max-requests-inflight, priority and fairness off): converges, and the logs
// show backoff, not a tight loop. Figures go to bench/RELIABILITY.md.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type ControlPlane, type ControlPlaneOptions, startControlPlane } from './testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from './testbed/crds.ts';
import { type ManagedProcess, freePort, readyz, waitFor } from './testbed/processes.ts';
import { applyFleet, figures, fleetObjects, logLines, sleep, startReconciler, waitConverged, waitForObjects } from './testbed/reliability.ts';
import { samples } from '../bench/stats.ts';

const OUTAGE_MS = 15_000;
let cp: ControlPlane | undefined;
let reconciler: ManagedProcess | undefined;
const tails = () => `${reconciler?.logFile}:\n${reconciler?.tail(10)}`;

async function controlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  cp = await startControlPlane({ keepDir: process.env.TESTBED_KEEP === '1', ...options });
  await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
  return cp;
}

afterEach(async () => {
  await reconciler?.stop();
  await cp?.stop();
  reconciler = undefined;
  cp = undefined;
}, 120_000);

describe('reconciler against a failing API server', () => {
  it('re-lists and converges after kube-apiserver is stopped for 15 s, without a restart, and /readyz shows the outage', async () => {
    const k = await controlPlane();
    const count = 1000;
    const healthPort = await freePort();
    const proc = startReconciler(k, 'outage', ['--no-leader-elect', '--health-port', String(healthPort), '--health-host', '127.0.0.1', '--watch-failure-bound', '5s']);
    reconciler = proc;
    await waitFor('reconciler ready', async () => (await readyz(healthPort)).status === 200, 60_000, tails);
    const pid = proc.child.pid;
    await applyFleet(k, 'outage', count);
    await waitForObjects(k, 'outage', Math.floor(fleetObjects(count) / 3), 300_000, tails);

    // /readyz sampled twice a second from the outage until convergence.
    const seen: { at: number; status: number; body: string }[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        seen.push({ at: Date.now(), ...(await readyz(healthPort)) });
        await sleep(500);
      }
    })();
    const stopAt = Date.now();
    // SIGTERM: kube-apiserver shuts down gracefully (it stops serving first); the 15 s count from its exit.
    await k.stopApiServer();
    const downAt = Date.now();
    await sleep(OUTAGE_MS);
    await k.startApiServer();
    const upAt = Date.now();
    const { at, report } = await waitConverged(k, 'outage', 600_000, tails);
    await waitFor('ready again', async () => (await readyz(healthPort)).status === 200, 60_000, tails);
    sampling = false;
    await sampler;

    expect(report.present).toBe(fleetObjects(count));
    // The same process throughout: no exit, no restart.
    expect(proc.child.exitCode).toBeNull();
    expect(proc.child.pid).toBe(pid);
    const unready = seen.filter((s) => s.at < upAt && s.status === 503);
    expect(unready.length).toBeGreaterThan(0);
    expect(unready[0]?.body).toMatch(/^not ready\n(.*\n)*\[-\]informer \w+: watch failing for \d+ s \(bound 5 s\)/);
    expect(logLines(proc, 'watch restored').length).toBeGreaterThan(0);
    const firstUnready = unready[0]?.at ?? downAt;
    const readyAgain = seen.find((s) => s.at > upAt && s.status === 200)?.at ?? at;
    figures('kube-apiserver stopped 15 s mid-convergence, same port', {
      modelServices: count,
      objects: report.present,
      apiServerShutdownSeconds: (downAt - stopAt) / 1000,
      outageSeconds: (upAt - downAt) / 1000,
      unreadyAfterStopSeconds: (firstUnready - stopAt) / 1000,
      readyAgainAfterApiUpSeconds: (readyAgain - upAt) / 1000,
      convergedAfterApiUpSeconds: (at - upAt) / 1000,
      watchFailuresLogged: logLines(proc, 'watch failed; restarting').length,
      reconcilesRetried: logLines(proc, 'reconcile failed; will retry').length,
      readyzSample: unready[0]?.body,
    });
  }, 900_000);

  it('converges against an API server answering 429, and backs off as Retry-After asks', async () => {
    // Priority and fairness off: the plain max-in-flight filter answers 429
    // with Retry-After: 1. It exempts system:masters, so the reconciler runs
    // as a user of its own (impersonated), bound to cluster-admin.
    const k = await controlPlane({ apiServerFlags: ['--enable-priority-and-fairness=false', '--max-requests-inflight=3', '--max-mutating-requests-inflight=1'] });
    await k.kubectlOk(['create', 'clusterrolebinding', 'throttled-reconciler', '--clusterrole=cluster-admin', '--user=throttled-reconciler']);
    const kubeconfig = join(k.dir, 'throttled-kubeconfig');
    const admin = JSON.parse(await k.kubectlOk(['config', 'view', '--raw', '-o', 'json'])) as { users: { user: Record<string, unknown> }[] };
    for (const u of admin.users) u.user.as = 'throttled-reconciler';
    writeFileSync(kubeconfig, JSON.stringify(admin));
    const count = 300;
    const proc = startReconciler(k, 'throttled', ['--no-leader-elect'], { KUBECONFIG: kubeconfig });
    reconciler = proc;
    const t0 = Date.now();
    await applyFleet(k, 'throttled', count);
    const { at, report } = await waitConverged(k, 'throttled', 600_000, tails);
    expect(report.present).toBe(fleetObjects(count));
    const backoffs = logLines(proc, 'API server throttled a write (429); backing off');
    // The fault was real, and every wait honoured the server's Retry-After: 1.
    expect(backoffs.length).toBeGreaterThan(0);
    expect(backoffs.every((l) => (l.delayMs as number) >= 1000)).toBe(true);
    const metrics = await k.kubectlOk(['get', '--raw', '/metrics']);
    const byCode = new Map<string, number>();
    for (const s of samples(metrics, 'apiserver_request_total')) byCode.set(s.labels.code ?? '', (byCode.get(s.labels.code ?? '') ?? 0) + s.value);
    const retried = logLines(proc, 'reconcile failed; will retry');
    figures('kube-apiserver answering 429 (--max-requests-inflight=3, --max-mutating-requests-inflight=1, APF off)', {
      modelServices: count,
      objects: report.present,
      convergeSeconds: (at - t0) / 1000,
      apiServer429s: byCode.get('429') ?? 0,
      writesBackedOff: backoffs.length,
      backoffDelaysMs: [...new Set(backoffs.map((l) => l.delayMs))].sort((a, b) => (a as number) - (b as number)),
      reconcilesRetriedByQueue: retried.length,
      retriedFor429: retried.filter((l) => String(l.error).includes(' 429 ')).length,
    });
  }, 900_000);
});
