// Two webhook processes behind a loopback haproxy (Debian's package, TCP mode:
// TLS passes through, as kube-proxy passes it to the pods), registered with
// the shipped configurations (failurePolicy Fail), on a control plane of its
// own. 2,000 `kubectl apply`s each: one webhook SIGKILLed halfway (the failed
// applies are counted and what kubectl printed is kept), then one SIGTERMed
// halfway (its drain must lose nothing). Figures go to bench/RELIABILITY.md.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { request } from 'node:https';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { modelServiceFleet } from './fixtures/model-service.ts';
import { type ControlPlane, startControlPlane } from './testbed/control-plane.ts';
import { MODEL_SERVICE_CRD, installCrds } from './testbed/crds.ts';
import { liveModelServices } from './testbed/generated.ts';
import { type ManagedProcess, freePort, startProcess, waitFor } from './testbed/processes.ts';
import { figures } from './testbed/reliability.ts';
import { CLI, makeWebhookCertificates, registerWebhooks } from './testbed/webhook.ts';

const APPLIES = 2000;
/** kubectl processes at once: enough that reviews are in flight at any moment, few enough for 2 cores. */
const CONCURRENCY = 4;
let cp: ControlPlane;
let certDir: string;
let haproxy: ManagedProcess;
/** haproxy's URL, and the CA the registrations trust. */
let front = '';
let caPem = '';
const ports: number[] = [];
const webhooks: (ManagedProcess | undefined)[] = [];
const tails = () => [haproxy, ...webhooks].map((p) => `${p?.logFile}:\n${p?.tail(5)}`).join('\n---\n');

function haproxyBinary(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('haproxy is not installed: run `apt-get install -y haproxy` (Debian\'s package; .ci/run installs it when missing)');
  }
}

/** `modelplane-affinity webhook` on a fixed port (haproxy's configuration names it), waiting for /healthz. */
async function startWebhook(i: number): Promise<ManagedProcess> {
  const proc = startProcess(process.execPath, [CLI, 'webhook', '--port', String(ports[i]), '--host', '127.0.0.1', '--cert-dir', certDir], join(cp.dir, `webhook-${i}.log`), { ...process.env, LOG_LEVEL: 'info' });
  webhooks[i] = proc;
  await waitFor(`webhook ${i}`, async () => (await fetchStatus(ports[i] as number)) === 200, 30_000, () => proc.tail());
  return proc;
}

function fetchStatus(port: number): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/readyz', rejectUnauthorized: false, timeout: 1000 }, (res) => (res.resume(), resolve(res.statusCode ?? 0)));
    req.on('error', () => resolve(0));
    req.end();
  });
}

beforeAll(async () => {
  const bin = haproxyBinary();
  cp = await startControlPlane({ keepDir: process.env.TESTBED_KEEP === '1' });
  await installCrds(cp, [MODEL_SERVICE_CRD]);
  certDir = join(cp.dir, 'webhook-certs');
  const { ca } = makeWebhookCertificates(cp.dir, certDir, 'ha');
  ports.push(await freePort(), await freePort());
  const frontPort = await freePort();
  front = `https://127.0.0.1:${frontPort}`;
  caPem = ca.certPem;
  for (const i of [0, 1]) await startWebhook(i);
  // Health-checked on /readyz every 500 ms (one failure takes a server out); a
  // connection that cannot be made is retried on the other server.
  const config = join(cp.dir, 'haproxy.cfg');
  writeFileSync(
    config,
    [
      'global',
      '  maxconn 4096',
      'defaults',
      '  mode tcp',
      '  timeout connect 1s',
      '  timeout client 120s',
      '  timeout server 120s',
      '  retries 3',
      '  option redispatch',
      'frontend webhook',
      `  bind 127.0.0.1:${frontPort}`,
      '  default_backend webhooks',
      'backend webhooks',
      '  balance roundrobin',
      '  option httpchk GET /readyz',
      '  http-check expect status 200',
      ...ports.map((p, i) => `  server w${i} 127.0.0.1:${p} check check-ssl verify none inter 500 fall 1 rise 2`),
      '',
    ].join('\n'),
  );
  haproxy = startProcess(bin, ['-f', config, '-db'], join(cp.dir, 'haproxy.log'));
  await waitFor('haproxy', async () => (await fetchStatus(frontPort)) === 200, 20_000, () => haproxy.tail());
  await registerWebhooks(cp, front, caPem);
}, 300_000);

afterAll(async () => {
  for (const w of webhooks) await w?.stop();
  await haproxy?.stop();
  await cp?.stop();
}, 120_000);

interface Outcome {
  i: number;
  ok: boolean;
  startedAt: number;
  ms: number;
  stderr: string;
}

/** 2,000 applies, CONCURRENCY at a time; `fault` runs once when apply number `at` starts. */
async function applies(namespace: string, at: number, fault: () => void): Promise<{ outcomes: Outcome[]; faultAt: number }> {
  await cp.kubectlOk(['create', 'namespace', namespace]);
  const fleet = modelServiceFleet(APPLIES, namespace);
  const outcomes: Outcome[] = [];
  let next = 0;
  let faultAt = 0;
  const worker = async () => {
    while (next < fleet.length) {
      const i = next++;
      if (i === at) {
        faultAt = Date.now();
        fault();
      }
      const startedAt = Date.now();
      const r = await cp.kubectl(['apply', '-f', '-'], { input: stringify(fleet[i]), timeoutMs: 60_000 });
      outcomes.push({ i, ok: r.code === 0, startedAt, ms: Date.now() - startedAt, stderr: r.stderr.trim() });
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { outcomes: outcomes.sort((a, b) => a.i - b.i), faultAt };
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
};

/** p50/p99 of apply latency overall and for the applies started within 10 s of the fault. */
function latency(outcomes: Outcome[], faultAt: number) {
  const around = outcomes.filter((o) => o.startedAt >= faultAt && o.startedAt < faultAt + 10_000).map((o) => o.ms);
  const all = outcomes.map((o) => o.ms);
  return { p50Ms: percentile(all, 50), p99Ms: percentile(all, 99), faultWindowP50Ms: percentile(around, 50), faultWindowP99Ms: percentile(around, 99), faultWindowApplies: around.length };
}

/**
 * Registers, for one apply, a TLS server with the webhook's certificate that
 * reads each review and destroys the connection unanswered; returns what
 * kubectl printed, with the registration pointed back at haproxy.
 */
async function applyWhileReviewsAreCut(): Promise<string> {
  const cutter = createTlsServer({ cert: readFileSync(join(certDir, 'tls.crt')), key: readFileSync(join(certDir, 'tls.key')) }, (socket) => socket.once('data', () => socket.destroy()));
  const port = await new Promise<number>((resolve) => cutter.listen(0, '127.0.0.1', () => resolve((cutter.address() as AddressInfo).port)));
  try {
    await registerWebhooks(cp, `https://127.0.0.1:${port}`, caPem);
    await cp.kubectlOk(['create', 'namespace', 'ha-cut']);
    const r = await cp.kubectl(['apply', '-f', '-'], { input: stringify(modelServiceFleet(1, 'ha-cut')[0]) });
    return r.stderr.trim();
  } finally {
    await registerWebhooks(cp, front, caPem);
    await new Promise((resolve) => cutter.close(resolve));
  }
}

/** Every stored ModelService went through the mutating webhook (failurePolicy Fail): its defaults are there. */
async function undefaulted(namespace: string): Promise<string[]> {
  return (await liveModelServices(cp, namespace)).filter((ms) => ms.spec?.affinity?.type !== 'None' && ms.spec?.affinity?.fallback === undefined).map((ms) => String(ms.metadata.name));
}

describe('two webhooks behind haproxy', () => {
  it('a SIGKILL of one during 2,000 applies fails only the reviews it had in flight, and says so', async () => {
    const { outcomes, faultAt } = await applies('ha-kill', APPLIES / 2, () => webhooks[0]?.child.kill('SIGKILL'));
    const failed = outcomes.filter((o) => !o.ok);
    const stored = await liveModelServices(cp, 'ha-kill');
    expect(stored).toHaveLength(APPLIES - failed.length);
    expect(await undefaulted('ha-kill')).toEqual([]);
    // At most what could be in flight: one review per kubectl, each on its own connection.
    expect(failed.length).toBeLessThanOrEqual(CONCURRENCY * 2);
    // What a user sees when a review dies with its webhook: a server that reads the review and drops the connection, as a SIGKILL mid-review does.
    const printed = await applyWhileReviewsAreCut();
    expect(printed).toContain('failed calling webhook');
    figures('webhook SIGKILL behind haproxy during 2,000 kubectl applies', {
      applies: APPLIES,
      failed: failed.length,
      kubectlPrinted: [...new Set(failed.map((f) => f.stderr))],
      kubectlPrintsForAReviewCutMidway: printed,
      ...latency(outcomes, faultAt),
    });
    // Back for the next scenario, once haproxy's health check has seen it up again.
    const upLines = () => haproxy.tail(1_000_000).split('w0 is UP').length;
    const before = upLines();
    await startWebhook(0);
    await waitFor('haproxy marks the restarted webhook up', async () => upLines() > before, 30_000, tails);
  }, 1_200_000);

  it('a SIGTERM of one during 2,000 applies loses none: it drains', async () => {
    const drained = webhooks[1] as ManagedProcess;
    const { outcomes, faultAt } = await applies('ha-drain', APPLIES / 2, () => drained.child.kill('SIGTERM'));
    const failed = outcomes.filter((o) => !o.ok);
    expect(failed.map((f) => f.stderr)).toEqual([]);
    expect(await liveModelServices(cp, 'ha-drain')).toHaveLength(APPLIES);
    expect(await undefaulted('ha-drain')).toEqual([]);
    const drainLine = drained
      .tail(1_000_000)
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; ended?: string; servedWhileDraining?: number; cutInFlight?: number; ms?: number })
      .find((l) => l.msg === 'drained');
    expect(drainLine?.cutInFlight).toBe(0);
    expect(drainLine?.ended).toBe('quiet');
    figures('webhook SIGTERM (drain) behind haproxy during 2,000 kubectl applies', {
      applies: APPLIES,
      failed: failed.length,
      servedWhileDraining: drainLine?.servedWhileDraining,
      drainMs: drainLine?.ms,
      ...latency(outcomes, faultAt),
    });
  }, 1_200_000);
});
