// Reliability of the reconciler under process faults, on a control plane of
// its own (no webhook, no garbage collector, so an orphan would stay and be
// seen): SIGKILL mid-convergence of 1,000 ModelServices and a restart; hand
// edits and deletes of generated objects at 10/s while it converges; the
// leader of two managers killed mid-run. Figures go to bench/RELIABILITY.md.
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeObject } from '../src/model-service.ts';
import { render } from '../src/render.ts';
import { modelServiceFleet } from './fixtures/model-service.ts';
import { loadClusterAccess } from '../reconciler/cluster-access.ts';
import { KubeClient, resourcePath } from '../reconciler/kube.ts';
import { refFor } from '../reconciler/writer.ts';
import { type ControlPlane, startControlPlane } from './testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from './testbed/crds.ts';
import type { ManagedProcess } from './testbed/processes.ts';
import { RELIABILITY_IMAGE, applyFleet, duplicateConditions, figures, fleetObjects, logLines, sleep, startCli, startReconciler, waitConverged, waitForObjects } from './testbed/reliability.ts';
import { makeWebhookCertificates } from './testbed/webhook.ts';
import { freePort, waitFor } from './testbed/processes.ts';

const FLEET = 1000;
let cp: ControlPlane;
const running: ManagedProcess[] = [];
const tails = () => running.map((p) => `${p.logFile}:\n${p.tail(8)}`).join('\n---\n');
/** Leader election as in a cluster, with a short lease so a restart does not wait 15 s for the dead holder's. */
const SHORT_LEASE = ['--leader-election-namespace', 'default', '--lease-duration', '5s', '--renew-deadline', '4s', '--retry-period', '1s'];

beforeAll(async () => {
  cp = await startControlPlane({ keepDir: process.env.TESTBED_KEEP === '1' });
  await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
}, 300_000);

afterAll(async () => {
  for (const p of running) await p.stop();
  await cp?.stop();
}, 120_000);

function track(p: ManagedProcess): ManagedProcess {
  running.push(p);
  return p;
}

async function stopAll(): Promise<void> {
  for (const p of running.splice(0)) await p.stop();
}

describe('reconciler reliability', () => {
  it('converges with no orphans, duplicates or conflicts after a SIGKILL in the middle of 1,000 ModelServices', async () => {
    const ns = 'sigkill';
    const expected = fleetObjects(FLEET);
    const first = track(startReconciler(cp, 'sigkill-first', SHORT_LEASE));
    const t0 = Date.now();
    await applyFleet(cp, ns, FLEET);
    const atKill = await waitForObjects(cp, ns, Math.floor(expected / 3), 300_000, tails);
    first.child.kill('SIGKILL');
    const killedAt = Date.now();
    const second = track(startReconciler(cp, 'sigkill-second', SHORT_LEASE));
    const { at, report } = await waitConverged(cp, ns, 600_000, tails);
    expect(report.orphans).toEqual([]);
    expect(report.badOwners).toEqual([]);
    expect(report.conflicts).toEqual([]);
    expect(report.present).toBe(expected);
    expect(await duplicateConditions(cp, ns)).toEqual([]);
    expect(second.child.exitCode).toBeNull();
    figures('reconciler SIGKILL mid-convergence, restart', {
      modelServices: FLEET,
      objects: expected,
      objectsAtKill: atKill,
      secondsToKill: (killedAt - t0) / 1000,
      recoverySeconds: (at - killedAt) / 1000,
      secondLeaderAfterSeconds: secondsUntil(second, 'became leader', killedAt),
    });
    await stopAll();
  }, 900_000);

  it('restores every generated object edited or deleted by hand at 10/s while it converges', async () => {
    const ns = 'drift';
    const count = 500;
    const expected = fleetObjects(count);
    const proc = track(startReconciler(cp, 'drift', SHORT_LEASE));
    await applyFleet(cp, ns, count);
    await waitForObjects(cp, ns, Math.floor(expected / 2), 300_000, tails);
    const client = new KubeClient(await loadClusterAccess({ KUBECONFIG: cp.kubeconfig }));
    // The targets are what render() says exists (a kubectl list per edit would take longer than the 100 ms between edits).
    const targets = modelServiceFleet(count, ns).flatMap((ms) => render(ms, { extProcImage: RELIABILITY_IMAGE }).objects);
    const done = { edits: 0, deletes: 0, missed: 0 };
    const editsStartedAt = Date.now();
    try {
      // 20 s at 10 per second: every other one a delete, the rest a spec edit that the next apply must revert.
      for (let i = 0; i < 200; i++) {
        const tick = sleep(100);
        const target = targets[(i * 7919) % targets.length] as KubeObject;
        const ref = refFor(target);
        try {
          if (i % 2 === 0) {
            await client.request('DELETE', resourcePath(ref));
            done.deletes++;
          } else {
            await client.request('PATCH', resourcePath(ref), { body: { metadata: { labels: { 'hand-edited': 'yes' } }, spec: handEdit(target) }, contentType: 'application/merge-patch+json' });
            done.edits++;
          }
        } catch {
          done.missed++; // not created yet, or deleted by an earlier tick and not back yet
        }
        await tick;
      }
    } finally {
      client.close();
    }
    const editsEndedAt = Date.now();
    const { at, report } = await waitConverged(cp, ns, 300_000, tails);
    expect(report.present).toBe(expected);
    expect(done.edits + done.deletes).toBeGreaterThan(150);
    figures('hand edits and deletes at 10/s during convergence', {
      modelServices: count,
      objects: expected,
      ...done,
      editsPerSecond: Math.round((200 / (editsEndedAt - editsStartedAt)) * 10_000) / 10,
      recreated: logLines(proc, 'recreated: the API server refused to repair it in place').length,
      restoredSecondsAfterLastEdit: (at - editsEndedAt) / 1000,
    });
    await stopAll();
  }, 900_000);

  it('the other of two managers finishes everything when the leader is killed mid-run', async () => {
    const ns = 'leader';
    const expected = fleetObjects(FLEET);
    const certDir = join(cp.dir, 'manager-certs');
    makeWebhookCertificates(cp.dir, certDir, 'managers');
    // The defaults of the install: 15 s lease, 10 s renew deadline, 2 s retry.
    const manager = async (name: string) => {
      const port = await freePort();
      const proc = track(startCli(cp, name, ['manager', '--port', String(port), '--host', '127.0.0.1', '--cert-dir', certDir, '--ext-proc-image', RELIABILITY_IMAGE, '--leader-election-namespace', ns]));
      return { proc, readyz: () => httpsText(`https://127.0.0.1:${port}/readyz`) };
    };
    await cp.kubectlOk(['create', 'namespace', ns]);
    const leader = await manager('manager-a');
    const a = leader.proc;
    await waitUntil(() => logLines(a, 'became leader').length > 0, 60_000, tails);
    const standby = await manager('manager-b');
    const b = standby.proc;
    // /readyz on the webhook port: the leader once its informers have listed; the standby, which runs none, at once.
    await waitFor('leader ready', async () => (await leader.readyz()).status === 200, 60_000, tails);
    expect((await leader.readyz()).body).toContain('[+]informer ModelService: synced');
    await waitFor('standby ready', async () => (await standby.readyz()).status === 200, 60_000, tails);
    expect(await standby.readyz()).toEqual({ status: 200, body: 'ok\n[+]leader election: standby, not reconciling\n' });
    const t0 = Date.now();
    await applyFleet(cp, `${ns}-fleet`, FLEET);
    const atKill = await waitForObjects(cp, `${ns}-fleet`, Math.floor(expected / 3), 300_000, tails);
    a.child.kill('SIGKILL');
    const killedAt = Date.now();
    const { at, report } = await waitConverged(cp, `${ns}-fleet`, 600_000, tails);
    expect(report.present).toBe(expected);
    expect(report.conflicts).toEqual([]);
    expect(await duplicateConditions(cp, `${ns}-fleet`)).toEqual([]);
    expect(logLines(b, 'became leader')).toHaveLength(1);
    expect((await standby.readyz()).body).toContain('[+]informer ModelService: synced');
    figures('leader of two managers SIGKILLed mid-run', {
      modelServices: FLEET,
      objects: expected,
      objectsAtKill: atKill,
      secondsToKill: (killedAt - t0) / 1000,
      takeoverSeconds: secondsUntil(b, 'became leader', killedAt),
      recoverySeconds: (at - killedAt) / 1000,
      leaseDurationSeconds: 15,
    });
    await stopAll();
  }, 900_000);
});

/** A change to the spec the renderer sets, different for each kind. */
function handEdit(o: KubeObject): Record<string, unknown> {
  switch (o.kind) {
    case 'BackendTrafficPolicy':
      return { loadBalancer: { type: 'RoundRobin', consistentHash: null } };
    case 'Deployment':
      return { replicas: 7 };
    case 'PodDisruptionBudget':
      return { minAvailable: 0 };
    case 'Service':
      return { ports: [{ name: 'grpc', port: 9999, targetPort: 'grpc', protocol: 'TCP' }] };
    default:
      return { extProc: [{ backendRefs: [{ group: '', kind: 'Service', name: 'elsewhere', port: 1 }] }] };
  }
}

/** Seconds from `since` to the process's first log line `msg` (undefined when it never logged it). */
function secondsUntil(proc: ManagedProcess, msg: string, since: number): number | undefined {
  const line = logLines(proc, msg)[0];
  return line ? ((line.time as number) - since) / 1000 : undefined;
}

/** GET over HTTPS (the bed's self-signed webhook certificate); status 0 when nothing answers. */
function httpsText(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = httpsRequest(url, { rejectUnauthorized: false, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

async function waitUntil(check: () => boolean, timeoutMs: number, diagnose: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms\n${diagnose()}`);
    await sleep(200);
  }
}
