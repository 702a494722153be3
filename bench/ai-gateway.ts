// Envoy AI Gateway in front (issue 16, "Measure"): real requests to
// /v1/chat/completions with the model in the body, through a real Envoy
// 1.39.3 configured by Envoy Gateway v1.9.0's controller with Envoy AI
// Gateway v1.0.0's extension server, AI Gateway's router-level ext_proc in
// front and our hasher behind (test/testbed/ai-gateway.ts, fleet-bed.ts).
//
// 1. Locality: one AIGatewayRoute (the only one on the Gateway, labelled for
//    its ModelService) over 3 inference clusters; for None, Session and
//    PrefixHash the synthetic trace of test/dataplane.int.test.ts (200
//    conversations x 5 turns, seed 11), every cluster's prefix cache emptied
//    first: later turns warm, later turns on turn 1's cluster, mean and p99
//    time to the answer (the simulated time to first token: the seed's
//    800 / 150 ms scaled down 10x, as bench/data-plane.ts).
// 2. What our ext_proc adds behind AI Gateway's: two more AIGatewayRoutes
//    over 3 zero-delay clusters, one PrefixHash (AI Gateway's processor, then
//    ours), one Session (AI Gateway's processor only, the same
//    BackendTrafficPolicy shape). Requests carry x-ai-eg-model as well as the
//    model in the body, so the first route match is the model's own rule and
//    the route-targeted hasher runs for the PrefixHash route only (without the
//    header every request would first match the oldest route's catch-all; see
//    README "Envoy AI Gateway"); AI Gateway's processor runs for both.
//    Alternating pairs: each round runs both, the order flipped every round,
//    closed loops at concurrency 1 (latency) and 16; added = PrefixHash minus
//    Session in the same round, median over rounds. CPU per request of Envoy,
//    AI Gateway's extproc and our hasher from /proc.
//
// Runs in a network namespace of its own whose only interface is lo; every
// binary and wheel is found (or built) before.
//
//   node bench/ai-gateway.ts [--conversations 200] [--rounds 6] [--requests 2000] [--latency-requests 1000] [--body-bytes 4096]
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { MODEL_SERVICE_LABEL, generatedNames } from '../src/naming.ts';
import { MODEL_HEADER, aiGatewayRoute, aiServiceBackend } from '../test/testbed/ai-gateway.ts';
import { type Kubectl, startControlPlane } from '../test/testbed/control-plane.ts';
import { type Conversation, type Locality, type TurnResult, chatBody, locality, runConversations, send, syntheticConversations } from '../test/testbed/conversations.ts';
import { MODEL_SERVICE_CRD, aiGatewayCrdFiles, gatewayCrdFiles, installCrds } from '../test/testbed/crds.ts';
import { type AffinityMode, type FleetBed, SESSION_HEADER, startFleetBed } from '../test/testbed/fleet-bed.ts';
import { backend, yamlDocuments } from '../test/testbed/fleet.ts';
import { AIGATEWAY_TOOLS, ETCD_TOOLS, GATEWAY_TOOLS, KUBE_TOOLS, ensureGoTools } from '../test/testbed/go-tools.ts';
import { type InferenceCluster, startInferenceCluster } from '../test/testbed/inference-cluster.ts';
import { waitFor } from '../test/testbed/processes.ts';
import { envoyBinary } from '../test/testbed/python-tools.ts';
import { makeWebhookCertificates, registerWebhooks, startWebhookProcess } from '../test/testbed/webhook.ts';
import { alternatingPair, cpuSeconds, median, percentile } from './stats.ts';

const { values: args } = parseArgs({
  options: {
    conversations: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '6' },
    requests: { type: 'string', default: '2000' },
    'latency-requests': { type: 'string', default: '1000' },
    'body-bytes': { type: 'string', default: '4096' },
    inner: { type: 'boolean', default: false },
  },
});

const SCALE = 10;
const COLD_MS = 800 / SCALE;
const WARM_MS = 150 / SCALE;
const CLUSTERS = 3;
const TRACE_MS = 'llama';
const TRACE_MODEL = 'llama-3.1-8b-instruct';
const MODES: AffinityMode[] = ['None', 'Session', 'PrefixHash'];
const HOP = { hash: { ms: 'hop-hash', model: 'hop-hash-model' }, plain: { ms: 'hop-plain', model: 'hop-plain-model' } } as const;
const WARMUP = 300;

function log(message: string): void {
  process.stderr.write(`[bench:ai-gateway] ${message}\n`);
}

// --- 1. locality ------------------------------------------------------------

async function measureLocality(fleet: FleetBed, count: number): Promise<string[]> {
  const trace = syntheticConversations(count, 5, 11);
  const rows: Array<{ mode: AffinityMode; l: Locality; hashed: number }> = [];
  for (const mode of MODES) {
    await fleet.setAffinity(TRACE_MS, mode);
    // Empty prefix caches: each cluster stopped and started again, then Envoy sees the closed connections.
    for (const c of fleet.clusters) await c.stop();
    for (const c of fleet.clusters) await c.start();
    await new Promise((r) => setTimeout(r, 500));
    const results = await runConversations(trace, {
      url: fleet.url(TRACE_MS),
      concurrency: 16,
      timeoutMs: 30_000,
      body: (c, t) => chatBody(c, t, TRACE_MODEL),
      ...(mode === 'Session' ? { headers: (c: Conversation) => ({ [SESSION_HEADER]: c.id }) } : {}),
    });
    const l = locality(results);
    const hashed = results.flat().filter((t) => /^[0-9a-f]{16}$/.test(t.promptHash)).length;
    log(`${mode}: warm ${(100 * l.laterWarm).toFixed(1)}%, on turn 1's cluster ${l.laterOnFirstCluster}/${l.laterTurns}, mean ${l.meanMs.toFixed(1)} ms, p99 ${l.p99Ms.toFixed(1)} ms, failed ${l.failed}`);
    rows.push({ mode, l, hashed });
  }
  return [
    `Synthetic trace (test/testbed/conversations.ts, seed 11): ${count} conversations × 5 turns, ${count * 5} requests, model \`${TRACE_MODEL}\` in the body, to \`/v1/chat/completions\`; ` +
      `${CLUSTERS} inference clusters, cold ${COLD_MS} ms / warm ${WARM_MS} ms (the seed's 800 / 150 ms ÷ ${SCALE}); caches emptied before each mode; 16 conversations in flight.`,
    '',
    "| mode | later turns warm | later turns on turn 1's cluster | mean / p99 time to first token, ms (×10 for the seed's scale) | conversations per turn-1 cluster | requests with a hasher-set x-prompt-hash | failed |",
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(({ mode, l, hashed }) => {
      const split = Object.entries(l.split).sort(([a], [b]) => a.localeCompare(b)).map(([c, n]) => `${c.replace('cluster-', '')} ${n}`).join(', ');
      return `| ${mode} | ${(100 * l.laterWarm).toFixed(1)}% | ${l.laterOnFirstCluster}/${l.laterTurns} | ${l.meanMs.toFixed(1)} / ${l.p99Ms.toFixed(1)} | ${split} | ${hashed}/${l.requests} | ${l.failed}/${l.requests} |`;
    }),
  ];
}

// --- 2. what our ext_proc adds ------------------------------------------------

/** A chat body of `size` bytes whose first user message starts with `id` (so every request hashes apart). */
function hopBody(model: string, id: string, size: number): string {
  const envelope = (content: string) => JSON.stringify({ model, messages: [{ role: 'system', content: 'You are a helpful assistant.' }, { role: 'user', content }], stream: false });
  const room = size - envelope('').length;
  const text = `Request ${id}: ${'please keep the prefix of this conversation warm '.repeat(Math.ceil(room / 48))}`;
  return envelope(text.slice(0, room));
}

interface Run {
  latencies: number[];
  seconds: number;
  failed: number;
  hashed: number;
  cpuMs: Record<string, number>;
}

async function closedLoop(url: string, model: string, runId: string, size: number, concurrency: number, count: number, pids: Record<string, number>): Promise<Run> {
  const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
  const latencies: number[] = [];
  let next = 0;
  let failed = 0;
  let hashed = 0;
  const started = performance.now();
  const client = async () => {
    while (next < count) {
      const id = `${runId}-${next++}`;
      const r: TurnResult = await send(url, hopBody(model, id, size), { [MODEL_HEADER]: model, [SESSION_HEADER]: id });
      latencies.push(r.ms);
      if (r.status !== 200 || r.cluster === '') failed++;
      if (r.promptHash !== '') hashed++;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const cpuMs = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, (1000 * (cpuSeconds(pid) - (cpu0[k] as number))) / count]));
  return { latencies, seconds, failed, hashed, cpuMs };
}

/** The data plane's Envoy: the descendant of Envoy Gateway's controller (through func-e) named envoy. */
function envoyPid(controllerPid: number): number {
  const parents = new Map<number, number>();
  const names = new Map<number, string>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      names.set(Number(entry), stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')));
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const descends = (pid: number): boolean => {
    for (let p = parents.get(pid), hops = 0; p !== undefined && p > 1 && hops < 10; p = parents.get(p), hops++) if (p === controllerPid) return true;
    return false;
  };
  const found = [...names].find(([pid, name]) => name === 'envoy' && descends(pid));
  if (found === undefined) throw new Error(`no envoy process under Envoy Gateway's controller (pid ${controllerPid})`);
  return found[0];
}

async function measureHop(fleet: FleetBed, k: Kubectl, namespace: string, rounds: number, requests: number, latencyRequests: number, size: number): Promise<string[]> {
  const zero: InferenceCluster[] = [];
  for (let i = 0; i < CLUSTERS; i++) zero.push(await startInferenceCluster({ name: `zero-${String.fromCharCode(97 + i)}`, host: `127.0.0.${21 + i}`, coldMs: 0, warmMs: 0 }));
  try {
    const refs = zero.map((c) => ({ name: c.name }));
    await k.kubectlOk(['apply', '-f', '-'], {
      input: yamlDocuments([
        ...zero.flatMap((c) => [backend(namespace, c), aiServiceBackend(namespace, c)]),
        ...Object.values(HOP).map((h) => aiGatewayRoute(namespace, h.ms, h.model, refs, { [MODEL_SERVICE_LABEL]: h.ms })),
      ]),
    });
    await fleet.aiGateway?.waitForModels(Object.values(HOP).map((h) => h.model));
    await fleet.setAffinity(HOP.hash.ms, 'PrefixHash');
    await fleet.setAffinity(HOP.plain.ms, 'Session');
    const url = fleet.url(HOP.hash.ms);
    const hasher = generatedNames(HOP.hash.ms).prefixHash;
    const pids = (): Record<string, number> => ({
      envoy: envoyPid(fleet.dataPlane.controller.child.pid as number),
      aiGatewayExtProc: fleet.aiGateway?.extProc()?.child.pid as number,
      hasher: fleet.hashers.pod(hasher)?.process.child.pid as number,
    });
    for (const h of Object.values(HOP)) {
      await waitFor(`requests for ${h.model} to be served`, async () => (await send(url, hopBody(h.model, `probe-${Date.now()}`, size), { [MODEL_HEADER]: h.model })).status === 200, 60_000);
    }
    // Warm-up: connections, V8 tiering in the hasher, Envoy's pools.
    for (const h of Object.values(HOP)) await closedLoop(url, h.model, `warm-${h.ms}`, size, 16, WARMUP * 5, pids());
    type Pair = { hash: Run; plain: Run };
    const runs: Record<number, Pair[]> = { 1: [], 16: [] };
    for (let round = 0; round < rounds; round++) {
      for (const concurrency of [1, 16]) {
        const count = concurrency === 1 ? latencyRequests : requests;
        const [hash, plain] = await pairOf(round, (h) => closedLoop(url, h.model, `r${round}-c${concurrency}-${h.ms}`, size, concurrency, count, pids()));
        runs[concurrency]?.push({ hash, plain });
        log(
          `round ${round + 1} c=${concurrency}: with our hasher p50 ${percentile(hash.latencies, 50).toFixed(2)} p99 ${percentile(hash.latencies, 99).toFixed(2)} ms (${hash.hashed}/${count} hashed), ` +
            `without p50 ${percentile(plain.latencies, 50).toFixed(2)} p99 ${percentile(plain.latencies, 99).toFixed(2)} ms (${plain.hashed}/${count} hashed)`,
        );
        if (hash.failed + plain.failed > 0) throw new Error(`round ${round + 1}: ${hash.failed} + ${plain.failed} requests failed`);
        // A PrefixHash request without a hash is one Envoy let through past messageTimeout (failOpen); a Session one with a hash is a wrong setup.
        if (plain.hashed !== 0) throw new Error(`round ${round + 1}: the hasher ran for ${plain.hashed}/${count} Session requests`);
      }
    }
    const lines = [
      `Body ${size} bytes (a system and one user message, a per-request id first, so every request hashes apart); ${CLUSTERS} zero-delay inference clusters; ${rounds} rounds, the two variants in turn, order flipped every round; ` +
        `closed loops of ${latencyRequests} requests at concurrency 1 and ${requests} at 16 (keep-alive, the bench's main thread), after ${WARMUP * 5} unmeasured per variant. Added: with minus without in the same round, median over rounds (range). CPU per request from /proc (utime+stime).`,
      '',
      '| concurrency | variant | p50 / p99 ms | added p50 / p99 ms | req/s | Envoy CPU ms/req | AI Gateway extproc CPU ms/req | our hasher CPU ms/req | requests without a hash (failOpen past 200 ms), all rounds |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ];
    const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
    for (const concurrency of [1, 16]) {
      const pairs = runs[concurrency] ?? [];
      for (const variant of ['hash', 'plain'] as const) {
        const rs = pairs.map((p) => p[variant]);
        const q = (r: Run, p: number) => percentile(r.latencies, p);
        const added = (p: number) => pairs.map((pair) => q(pair.hash, p) - q(pair.plain, p));
        const cpu = (key: string) => median(rs.map((r) => r.cpuMs[key] ?? Number.NaN)).toFixed(3);
        lines.push(
          `| ${concurrency} | ${variant === 'hash' ? 'PrefixHash: AI Gateway ext_proc + our hasher' : 'Session: AI Gateway ext_proc only'} | ${median(rs.map((r) => q(r, 50))).toFixed(2)} / ${median(rs.map((r) => q(r, 99))).toFixed(2)} | ` +
            `${variant === 'hash' ? `${median(added(50)).toFixed(2)} (${range(added(50))}) / ${median(added(99)).toFixed(2)} (${range(added(99))})` : '—'} | ` +
            `${median(rs.map((r) => r.latencies.length / r.seconds)).toFixed(0)} | ${cpu('envoy')} | ${cpu('aiGatewayExtProc')} | ${variant === 'hash' ? cpu('hasher') : '—'} | ` +
            `${variant === 'hash' ? `${rs.reduce((n, r) => n + r.latencies.length - r.hashed, 0)} of ${rs.reduce((n, r) => n + r.latencies.length, 0)}` : '—'} |`,
        );
      }
    }
    return lines;
  } finally {
    for (const c of zero) await c.close();
  }
}

function pairOf<R>(round: number, run: (h: (typeof HOP)[keyof typeof HOP]) => Promise<R>): Promise<[R, R]> {
  // alternatingPair runs synchronously; chain the promises in its order.
  const order: Array<keyof typeof HOP> = [];
  alternatingPair(round, 'hash' as const, 'plain' as const, (key) => order.push(key));
  return (async () => {
    const results: Partial<Record<keyof typeof HOP, R>> = {};
    for (const key of order) results[key] = await run(HOP[key]);
    return [results.hash as R, results.plain as R];
  })();
}

// --- the run ----------------------------------------------------------------

async function inner(): Promise<void> {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
  const cp = await startControlPlane({ controllerManager: true });
  let fleet: FleetBed | undefined;
  let stopWebhook: (() => Promise<void>) | undefined;
  try {
    await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
    const certDir = join(cp.dir, 'webhook-certs');
    const { ca } = makeWebhookCertificates(cp.dir, certDir, 'bench');
    const webhook = await startWebhookProcess('webhook', certDir, join(cp.dir, 'webhook.log'));
    stopWebhook = () => webhook.process.stop();
    await registerWebhooks(cp, webhook.baseUrl, ca.certPem);
    const namespace = 'bench';
    await cp.kubectlOk(['create', 'namespace', namespace]);
    log("starting the fleet with Envoy AI Gateway (waits while another data plane holds Envoy Gateway's fixed ports)");
    const models = { [TRACE_MS]: TRACE_MODEL, ...Object.fromEntries(Object.values(HOP).map((h) => [h.ms, h.model])) };
    fleet = await startFleetBed({ kubectl: cp, kubeconfig: cp.kubeconfig, dir: cp.dir, namespace, clusters: CLUSTERS, coldMs: COLD_MS, warmMs: WARM_MS, routes: {}, aiGateway: { models } });
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: stringify(aiGatewayRoute(namespace, TRACE_MS, TRACE_MODEL, fleet.clusters.map((c) => ({ name: c.name })), { [MODEL_SERVICE_LABEL]: TRACE_MS })),
    });
    await fleet.aiGateway?.waitForModels([TRACE_MODEL]);
    const out = ['## Locality through Envoy AI Gateway', '', ...(await measureLocality(fleet, Number(args.conversations))), ''];
    process.stdout.write(`${out.join('\n')}\n`);
    const hop = await measureHop(fleet, cp, namespace, Number(args.rounds), Number(args.requests), Number(args['latency-requests']), Number(args['body-bytes']));
    process.stdout.write(`${['## What our ext_proc adds behind AI Gateway\'s', '', ...hop, ''].join('\n')}\n`);
  } finally {
    await fleet?.stop();
    await stopWebhook?.();
    await cp.stop();
  }
}

/** Finds or builds everything first (the Go module proxy and PyPI are outside the namespace), then runs the bench again inside one of its own. */
async function outer(): Promise<void> {
  await Promise.all([KUBE_TOOLS, ETCD_TOOLS, GATEWAY_TOOLS, AIGATEWAY_TOOLS].map((tools) => ensureGoTools(tools)));
  await Promise.all([envoyBinary(), gatewayCrdFiles(), aiGatewayCrdFiles()]);
  const machine = `${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}; Node ${process.version}; ${spawnSync('go', ['version']).stdout.toString().trim()}`;
  const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
  console.log(`# Through Envoy AI Gateway — ${new Date().toISOString()}\n\nMachine: ${machine}; load average before: ${load()}; arguments: ${process.argv.slice(2).join(' ') || '(defaults)'}\n`);
  const script = 'ip link set lo up && exec "$@"';
  const run = spawnSync('unshare', ['--net', 'sh', '-c', script, 'sh', process.execPath, import.meta.filename, '--inner', ...process.argv.slice(2)], { stdio: 'inherit' });
  console.log(`\nLoad average after: ${load()}`);
  process.exitCode = run.status ?? 1;
}

if (args.inner) await inner();
else await outer();
