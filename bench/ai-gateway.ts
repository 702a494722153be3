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
// 2. What our ext_proc adds behind AI Gateway's, for the attachment the
//    reconciler writes (one hasher per Gateway, its EnvoyExtensionPolicy
//    targeting the Gateway; README "Envoy AI Gateway"), in Modelplane's
//    shape: part 1's route gone, two AIGatewayRoutes in modelplane-system
//    over 3 zero-delay clusters, an older one for a model without a
//    ModelService and `bench-hop` matching x-ai-eg-model `bench/hop` (the
//    ModelService bench/hop's model). Requests carry the model in the body
//    only, so the first match is the older route's catch-all, which enables
//    the Gateway-level filter (it has no route-level one). Alternating pairs:
//    each round runs "with" (bench/hop on PrefixHash: the Gateway hasher keys
//    bench/hop, AI Gateway's processor then ours) and "without" (bench/hop on
//    Session: no PrefixHash model on the Gateway, the reconciler prunes the
//    hasher, AI Gateway's processor only), the order flipped every round; at
//    each switch the data plane settles (routes and clusters; the hasher
//    keying the model, or the listener without its filter and the hasher
//    gone; checked in /config_dump) and 1500 unmeasured requests warm it.
//    Closed loops at concurrency 1 (latency) and 16; added = with minus
//    without in the same round, median over rounds. CPU per request of
//    Envoy, AI Gateway's extproc and our hasher from /proc; requests of the
//    "with" runs that came back without a hash counted (failOpen).
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
import { MODEL_SERVICE_LABEL } from '../src/naming.ts';
import { type RouteBackend, aiGatewayRoute, aiServiceBackend, firstMatch, listenerFilters, liveRoutes } from '../test/testbed/ai-gateway.ts';
import { type Kubectl, startControlPlane } from '../test/testbed/control-plane.ts';
import { type Conversation, type Locality, type TurnResult, chatBody, locality, resetConnections, runConversations, send, syntheticConversations } from '../test/testbed/conversations.ts';
import { MODEL_SERVICE_CRD, aiGatewayCrdFiles, gatewayCrdFiles, installCrds } from '../test/testbed/crds.ts';
import { GATEWAY_NAMESPACE } from '../test/testbed/data-plane.ts';
import { type AffinityMode, type FleetBed, GATEWAY_HASHER, SESSION_HEADER, startFleetBed } from '../test/testbed/fleet-bed.ts';
import { backend, yamlDocuments } from '../test/testbed/fleet.ts';
import { AIGATEWAY_TOOLS, ETCD_TOOLS, GATEWAY_TOOLS, KUBE_TOOLS, ensureGoTools } from '../test/testbed/go-tools.ts';
import { type InferenceCluster, startInferenceCluster } from '../test/testbed/inference-cluster.ts';
import { waitFor } from '../test/testbed/processes.ts';
import { envoyBinary } from '../test/testbed/python-tools.ts';
import { makeWebhookCertificates, registerWebhooks, startWebhookProcess } from '../test/testbed/webhook.ts';
import { alternatingRunsAsync, cpuSeconds, median, percentile } from './stats.ts';

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
const NAMESPACE = 'bench';
const PATH = '/v1/chat/completions';
/** Part 2, Modelplane's shape: the ModelService, its AIGatewayRoute in modelplane-system (`<ns>-<name>`, model `<ns>/<name>`), and an older route for a model without a ModelService. */
const HOP_MS = 'hop';
const HOP_ROUTE = `${NAMESPACE}-${HOP_MS}`;
const HOP_MODEL = `${NAMESPACE}/${HOP_MS}`;
const OLDER_ROUTE = `${NAMESPACE}-older`;
const OLDER_MODEL = `${NAMESPACE}/older`;
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

/** No x-ai-eg-model from the client: the model is in the body only, as Modelplane's clients send it. */
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
      const r: TurnResult = await send(url, hopBody(model, id, size), { [SESSION_HEADER]: id });
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

/** Where the Gateway hasher's filter shows in Envoy's configuration (listener filter names, routes' typed_per_filter_config keys). */
const GATEWAY_FILTER = `envoyextensionpolicy/${GATEWAY_NAMESPACE}/${GATEWAY_HASHER}/`;
const VARIANTS = ['with', 'without'] as const;
type Variant = (typeof VARIANTS)[number];
const VARIANT_LABEL: Record<Variant, string> = {
  with: 'PrefixHash: AI Gateway ext_proc + the Gateway hasher',
  without: 'Session: AI Gateway ext_proc only (no Gateway hasher)',
};

/** The listener's filters and the route a request without x-ai-eg-model matches first, for the log and the checks. */
async function attachment(fleet: FleetBed): Promise<{ listener: boolean; first: string; enables: boolean }> {
  const dump = await fleet.dataPlane.configDump();
  const first = firstMatch(liveRoutes(dump), PATH, {});
  return { listener: listenerFilters(dump).some((f) => f.name.includes(GATEWAY_FILTER)), first: first?.name ?? 'none', enables: first?.enables.some((f) => f.includes(GATEWAY_FILTER)) ?? false };
}

async function applyModelplaneRoute(k: Kubectl, name: string, model: string, backends: RouteBackend[]): Promise<void> {
  await k.kubectlOk(['apply', '-f', '-'], { input: stringify(aiGatewayRoute(GATEWAY_NAMESPACE, name, model, backends)) });
  await waitFor(
    `AIGatewayRoute ${GATEWAY_NAMESPACE}/${name} Accepted and its HTTPRoute generated`,
    async () => {
      const accepted = await k.kubectl(['get', 'aigatewayroute', name, '-n', GATEWAY_NAMESPACE, '-o', 'jsonpath={.status.conditions[?(@.type=="Accepted")].status}']);
      return accepted.stdout === 'True' && (await k.kubectl(['get', 'httproute', name, '-n', GATEWAY_NAMESPACE, '-o', 'name'])).code === 0;
    },
    60_000,
  );
}

async function measureHop(fleet: FleetBed, k: Kubectl, rounds: number, requests: number, latencyRequests: number, size: number): Promise<string[]> {
  // Part 1's route and ModelService out of the way: only Modelplane-shaped routes on the Gateway, and no other PrefixHash model on its hasher.
  await fleet.setAffinity(TRACE_MS, 'None');
  await k.kubectlOk(['delete', 'aigatewayroute', TRACE_MS, '-n', NAMESPACE]);
  await waitFor(`HTTPRoute ${NAMESPACE}/${TRACE_MS} gone`, async () => (await k.kubectl(['get', 'httproute', TRACE_MS, '-n', NAMESPACE])).code !== 0, 60_000);
  const zero: InferenceCluster[] = [];
  for (let i = 0; i < CLUSTERS; i++) zero.push(await startInferenceCluster({ name: `zero-${String.fromCharCode(97 + i)}`, host: `127.0.0.${21 + i}`, coldMs: 0, warmMs: 0 }));
  try {
    await k.kubectlOk(['apply', '-f', '-'], { input: yamlDocuments(zero.flatMap((c) => [backend(GATEWAY_NAMESPACE, c), aiServiceBackend(GATEWAY_NAMESPACE, c)])) });
    const refs = zero.map((c) => ({ name: c.name }));
    await applyModelplaneRoute(k, OLDER_ROUTE, OLDER_MODEL, refs);
    // Envoy Gateway orders the catch-alls by creation time, in whole seconds, then by name: the older route a second older.
    await new Promise((r) => setTimeout(r, 1100));
    await applyModelplaneRoute(k, HOP_ROUTE, HOP_MODEL, refs);
    await fleet.aiGateway?.waitForModels([OLDER_MODEL, HOP_MODEL]);
    const url = fleet.url(HOP_MS);
    await waitFor(`requests for ${HOP_MODEL} to be served`, async () => (await send(url, hopBody(HOP_MODEL, `probe-${Date.now()}`, size))).status === 200, 60_000);
    const pids = (variant: Variant): Record<string, number> => {
      const hasher = fleet.hashers.pod(GATEWAY_HASHER)?.process.child.pid;
      if (variant === 'with' && hasher === undefined) throw new Error(`no Gateway hasher ${GATEWAY_HASHER} runs`);
      return {
        envoy: envoyPid(fleet.dataPlane.controller.child.pid as number),
        aiGatewayExtProc: fleet.aiGateway?.extProc()?.child.pid as number,
        reconciler: fleet.reconciler.child.pid as number,
        ...(variant === 'with' ? { hasher: hasher as number } : {}),
      };
    };
    let current: Variant | undefined;
    const switches: string[] = [];
    // A switch: the ModelService to PrefixHash (the reconciler writes the Gateway hasher) or to Session (it prunes it), the data plane settled, then an unmeasured warm-up (connections, V8 tiering in a new hasher, Envoy's pools).
    const become = async (variant: Variant, round: number) => {
      if (current === variant) return;
      const t0 = performance.now();
      if (variant === 'with') await fleet.setAffinity(HOP_MS, 'PrefixHash', {}, { gatewayHasher: true });
      else {
        await fleet.setAffinity(HOP_MS, 'Session');
        await waitFor("Envoy's listener without the Gateway hasher's filter", async () => !(await attachment(fleet)).listener, 90_000, () => fleet.reconciler.tail(20));
        await waitFor(`the Gateway hasher ${GATEWAY_HASHER} pruned`, async () => fleet.hashers.pod(GATEWAY_HASHER) === undefined, 90_000, () => fleet.reconciler.tail(20));
      }
      resetConnections();
      const a = await attachment(fleet);
      const note = `round ${round + 1}: ${variant} after ${((performance.now() - t0) / 1000).toFixed(1)} s; first match ${a.first}, Gateway hasher's filter on the listener ${a.listener}, enabled by the first match ${a.enables}`;
      log(note);
      switches.push(note);
      if (!a.first.startsWith(`httproute/${GATEWAY_NAMESPACE}/${OLDER_ROUTE}/`)) throw new Error(`the first match is ${a.first}, not the older route's catch-all`);
      if (a.enables !== (variant === 'with') || a.listener !== (variant === 'with')) throw new Error(`${variant}: the Gateway hasher's filter is ${a.listener ? '' : 'not '}on the listener and ${a.enables ? '' : 'not '}enabled by the first match`);
      await closedLoop(url, HOP_MODEL, `warm-r${round}-${variant}`, size, 16, WARMUP * 5, pids(variant));
      current = variant;
    };
    type Runs = Record<1 | 16, Run>;
    const pairs: Array<Record<Variant, Runs>> = [];
    for (let round = 0; round < rounds; round++) {
      const [withRuns, withoutRuns] = await alternatingRunsAsync(round, VARIANTS, async (variant): Promise<Runs> => {
        await become(variant, round);
        const at = async (concurrency: 1 | 16) => {
          const count = concurrency === 1 ? latencyRequests : requests;
          const r = await closedLoop(url, HOP_MODEL, `r${round}-c${concurrency}-${variant}`, size, concurrency, count, pids(variant));
          log(`round ${round + 1} c=${concurrency} ${variant}: p50 ${percentile(r.latencies, 50).toFixed(2)} p99 ${percentile(r.latencies, 99).toFixed(2)} ms, ${(count / r.seconds).toFixed(0)} req/s, ${r.hashed}/${count} hashed; CPU ms/req ${Object.entries(r.cpuMs).map(([k, ms]) => `${k} ${ms.toFixed(3)}`).join(', ')}`);
          if (r.failed > 0) throw new Error(`round ${round + 1} ${variant} c=${concurrency}: ${r.failed} requests failed`);
          // Without the Gateway hasher nothing of ours runs: a hash there is a wrong setup. With it, a request without one is one Envoy let through past messageTimeout (failOpen).
          if (variant === 'without' && r.hashed !== 0) throw new Error(`round ${round + 1}: ${r.hashed}/${count} requests hashed without the Gateway hasher`);
          return r;
        };
        return { 1: await at(1), 16: await at(16) };
      });
      pairs.push({ with: withRuns as Runs, without: withoutRuns as Runs });
    }
    const lines = [
      `Modelplane's shape: ModelService \`${NAMESPACE}/${HOP_MS}\`, its AIGatewayRoute \`${GATEWAY_NAMESPACE}/${HOP_ROUTE}\` (x-ai-eg-model \`${HOP_MODEL}\`) over ${CLUSTERS} zero-delay inference clusters (Backends and AIServiceBackends in ${GATEWAY_NAMESPACE}), ` +
        `after an older one, \`${GATEWAY_NAMESPACE}/${OLDER_ROUTE}\` (model \`${OLDER_MODEL}\`, no ModelService), the only routes on the Gateway. Requests carry the model in the body only (and ${SESSION_HEADER}), no x-ai-eg-model, ` +
        `so the first match is the older route's catch-all, which enables the Gateway hasher's filter when it exists. ` +
        `With: the ModelService on PrefixHash, so the reconciler writes the Gateway hasher keying \`${HOP_MODEL}\` (AI Gateway's processor, then ours). Without: the same ModelService on Session, so no PrefixHash model on the Gateway and the reconciler prunes the hasher (AI Gateway's processor only, the same BackendTrafficPolicy shape). ` +
        `Body ${size} bytes (a system and one user message, a per-request id first, so every request hashes apart); ${rounds} rounds, the two variants in turn, order flipped every round (so a round starts in the variant the last one ended in); ` +
        `after each switch the data plane settled (Envoy's route and clusters, the hasher keying the model or the listener without its filter and the hasher gone) and ${WARMUP * 5} unmeasured requests at concurrency 16; ` +
        `closed loops of ${latencyRequests} requests at concurrency 1 and ${requests} at 16 (keep-alive, the bench's main thread). Added: with minus without in the same round, median over rounds (range). CPU per request from /proc (utime+stime), median over rounds.`,
      '',
      '| concurrency | variant | p50 / p99 ms | added p50 / p99 ms | req/s | Envoy CPU ms/req | AI Gateway extproc CPU ms/req | our hasher CPU ms/req | requests without a hash (failOpen past 200 ms), all rounds |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ];
    const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
    for (const concurrency of [1, 16] as const) {
      for (const variant of VARIANTS) {
        const rs = pairs.map((p) => p[variant][concurrency]);
        const q = (r: Run, p: number) => percentile(r.latencies, p);
        const added = (p: number) => pairs.map((pair) => q(pair.with[concurrency], p) - q(pair.without[concurrency], p));
        const cpu = (key: string) => median(rs.map((r) => r.cpuMs[key] ?? Number.NaN)).toFixed(3);
        const mine = variant === 'with';
        lines.push(
          `| ${concurrency} | ${VARIANT_LABEL[variant]} | ${median(rs.map((r) => q(r, 50))).toFixed(2)} / ${median(rs.map((r) => q(r, 99))).toFixed(2)} | ` +
            `${mine ? `${median(added(50)).toFixed(2)} (${range(added(50))}) / ${median(added(99)).toFixed(2)} (${range(added(99))})` : '—'} | ` +
            `${median(rs.map((r) => r.latencies.length / r.seconds)).toFixed(0)} | ${cpu('envoy')} | ${cpu('aiGatewayExtProc')} | ${mine ? cpu('hasher') : '—'} | ` +
            `${mine ? `${rs.reduce((n, r) => n + r.latencies.length - r.hashed, 0)} of ${rs.reduce((n, r) => n + r.latencies.length, 0)}` : '—'} |`,
        );
      }
    }
    return [...lines, '', 'Switches:', '', ...switches.map((s) => `- ${s}`)];
  } finally {
    for (const c of zero) await c.close();
  }
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
    const namespace = NAMESPACE;
    await cp.kubectlOk(['create', 'namespace', namespace]);
    log("starting the fleet with Envoy AI Gateway (waits while another data plane holds Envoy Gateway's fixed ports)");
    const aiGateway = { models: { [TRACE_MS]: TRACE_MODEL, [HOP_MS]: HOP_MODEL }, routes: { [HOP_MS]: { namespace: GATEWAY_NAMESPACE, name: HOP_ROUTE } } };
    fleet = await startFleetBed({ kubectl: cp, kubeconfig: cp.kubeconfig, dir: cp.dir, namespace, clusters: CLUSTERS, coldMs: COLD_MS, warmMs: WARM_MS, routes: {}, aiGateway });
    await cp.kubectlOk(['apply', '-f', '-'], {
      input: stringify(aiGatewayRoute(namespace, TRACE_MS, TRACE_MODEL, fleet.clusters.map((c) => ({ name: c.name })), { [MODEL_SERVICE_LABEL]: TRACE_MS })),
    });
    await fleet.aiGateway?.waitForModels([TRACE_MODEL]);
    const out = ['## Locality through Envoy AI Gateway', '', ...(await measureLocality(fleet, Number(args.conversations))), ''];
    process.stdout.write(`${out.join('\n')}\n`);
    const hop = await measureHop(fleet, cp, Number(args.rounds), Number(args.requests), Number(args['latency-requests']), Number(args['body-bytes']));
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
