// Benchmark: our ext_proc prefix hasher against the Gateway API Inference
// Extension's body-based router (BBR v1.5.0, non-streaming, plaintext), the
// closest production peer (an ext_proc that reads the body and sets a routing
// header). Same machine, same run, same load generator; each server pinned
// to core 0, the load generator (this process) and the test bed's control
// plane (BBR needs an API server) on core 1.
//
// One ext_proc stream per request, played as Envoy Gateway plays it: request
// headers, wait for the answer, one body message (end_of_stream), wait for the
// answer, half-close. Reported per body size (4 KiB and 32 KiB of OpenAI chat
// JSON): requests/s at saturation (closed loop, best of several
// concurrencies), p50/p99 of the exchange at half that rate (open loop, fixed
// arrival schedule, latency from the scheduled start), and server RSS with
// 1,000 open streams. ghz (a Go load generator that pipelines the messages
// without waiting, unlike Envoy) gives a second saturation figure; h2load
// (C, pipelined like ghz) a third, with latency at half load.
//
// Last, alternating pairs: both servers started once per body size, then
// h2load saturation runs taking turns, --pairs times, with the ratio taken
// within each pair and the median over pairs (the machine's speed drifts
// between rounds far more than within a pair).
//
// Every server listens on loopback only: the measuring part runs in a fresh
// network namespace whose only interface is lo (BBR binds all interfaces).
//
//   node_modules/.bin/node bench/ext-proc.ts [--seconds 5] [--rounds 2] [--pairs 8] [--skip-ghz]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { EnvoyStream, bodyMessage, connectExtProc, headersMessage, type ExtProcClient, type HeaderList } from '../ext-proc/envoy-harness.ts';
import { startControlPlane } from '../test/testbed/control-plane.ts';
import { alternatingPair, cpuSeconds, median, memoryMiB, percentile, sampleSum } from './stats.ts';
import { h2load, requireH2load, type H2loadRun } from './h2load.ts';
import { frameMessage } from '../ext-proc/grpc-wire.ts';
import { PROCESS_METHOD_PATH, processMethod, type ProcessingResponse } from '../ext-proc/protocol.ts';
import { ETCD_TOOLS, KUBE_TOOLS, REPO_ROOT, ensureGoTools, type GoToolsModule } from '../test/testbed/go-tools.ts';
import { freePort, startProcess, type ManagedProcess } from '../test/testbed/processes.ts';
import { builtCli } from '../test/testbed/webhook.ts';
import { EXT_PROC_ENV } from '../src/render.ts';

export const BENCH_TOOLS: GoToolsModule = {
  module: 'bench',
  binaries: [
    { name: 'bbr', pkg: 'sigs.k8s.io/gateway-api-inference-extension/cmd/bbr' },
    { name: 'ghz', pkg: 'github.com/bojand/ghz/cmd/ghz' },
  ],
};

const SERVER_CORE = '0';
const CLIENT_CORE = '1';
const PREFIX_BYTES = 1024;
const BODY_SIZES = [4096, 32768];
const CONCURRENCIES = [16, 64, 256];
const CONNECTIONS = 2;
const OPEN_STREAMS = 1000;

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
    pairs: { type: 'string', default: '8' },
    'skip-ghz': { type: 'boolean', default: false },
    inner: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(args.seconds);

/** An OpenAI chat-completion body of exactly `size` bytes. */
export function chatBody(size: number): Buffer {
  const envelope = (content: string) =>
    JSON.stringify({
      model: 'kimi-k2',
      messages: [
        { role: 'system', content: 'You are a helpful assistant. Answer briefly and cite the documents you use.' },
        { role: 'user', content },
      ],
      stream: true,
      temperature: 0.7,
    });
  const words = 'the cluster keeps the prefix of this conversation warm so the next turn starts fast ';
  let content = '';
  while (Buffer.byteLength(envelope(content)) < size) content += words;
  content = content.slice(0, content.length - (Buffer.byteLength(envelope(content)) - size));
  const body = Buffer.from(envelope(content));
  if (body.length !== size) throw new Error(`built a ${body.length}-byte body, wanted ${size}`);
  return body;
}

const HEADERS: HeaderList = [
  [':authority', 'gateway.example.com'],
  [':method', 'POST'],
  [':path', '/v1/chat/completions'],
  [':scheme', 'https'],
  ['content-type', 'application/json'],
  ['authorization', 'Bearer sk-redacted'],
  ['user-agent', 'OpenAI/Python 1.99.0'],
  ['x-request-id', '2f1c7e4a-6b1d-4d0e-9a53-3b9b0c6f1e22'],
];

interface Target {
  name: string;
  port: number;
  process: ManagedProcess;
  /** Does this body answer carry the header the server exists to set? */
  answered(response: ProcessingResponse | undefined): boolean;
  /** Body answers that carried the header, from the server's own metrics (h2load sees HTTP status only). */
  answeredCount?: () => Promise<number>;
}

function setHeaderKeys(response: ProcessingResponse | undefined): string[] {
  return (response?.request_body?.response?.header_mutation?.set_headers ?? []).map((h) => h.header?.key?.toLowerCase() ?? '');
}

function clients(port: number): ExtProcClient[] {
  // Separate subchannel pools, so each client is its own HTTP/2 connection.
  return Array.from({ length: CONNECTIONS }, () => connectExtProc(`127.0.0.1:${port}`, { channel: { 'grpc.use_local_subchannel_pool': 1 } }));
}

/** One request as Envoy plays it; resolves with the time the body answer came back. */
async function exchange(client: ExtProcClient, body: Buffer, target: Target): Promise<{ ok: boolean; stream: EnvoyStream }> {
  const stream = new EnvoyStream(client);
  const headersAnswer = await stream.send(headersMessage(HEADERS, false));
  if (headersAnswer?.request_headers === undefined) return { ok: false, stream };
  const bodyAnswer = await stream.send(bodyMessage(body, true));
  return { ok: target.answered(bodyAnswer), stream };
}

interface Saturation {
  rps: number;
  /** Server CPU time per request: holds steadier than req/s when other work shares the machine. */
  cpuMsPerRequest: number;
  concurrency: number;
  serverCpu: number;
  clientCpu: number;
  failures: number;
}

async function closedLoop(target: Target, body: Buffer, concurrency: number): Promise<Saturation> {
  const pool = clients(target.port);
  let done = 0;
  let failures = 0;
  let measuring = false;
  let stop = false;
  const worker = async (i: number) => {
    const client = pool[i % pool.length] as ExtProcClient;
    while (!stop) {
      const { ok, stream } = await exchange(client, body, target);
      stream.halfClose();
      if (measuring) {
        if (ok) done++;
        else failures++;
      }
      if (!ok) await stream.status;
    }
  };
  const workers = Array.from({ length: concurrency }, (_, i) => worker(i));
  await sleep(1000);
  measuring = true;
  const pid = target.process.child.pid as number;
  const server0 = cpuSeconds(pid);
  const client0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(SECONDS * 1000);
  measuring = false;
  const elapsed = (performance.now() - t0) / 1000;
  const serverCpu = (cpuSeconds(pid) - server0) / elapsed;
  const clientUsage = process.cpuUsage(client0);
  stop = true;
  await Promise.all(workers);
  for (const client of pool) client.close();
  return { rps: done / elapsed, cpuMsPerRequest: (1000 * serverCpu * elapsed) / Math.max(1, done), concurrency, serverCpu, clientCpu: (clientUsage.user + clientUsage.system) / 1e6 / elapsed, failures };
}

interface Latency {
  rate: number;
  p50: number;
  p99: number;
  /** How late the load generator started requests against the schedule (its own queueing), p99. */
  lagP99: number;
  achieved: number;
  failures: number;
  /** More than MAX_IN_FLIGHT exchanges were outstanding: the offered rate was over capacity. */
  overloaded: boolean;
}

const MAX_IN_FLIGHT = 2000;

/**
 * Open loop at a fixed rate: requests start on a schedule (checked every
 * millisecond), whatever the answers do. Latency runs from the actual start to
 * the body answer; the schedule lag is reported apart, so a load generator
 * that falls behind shows as lag rather than as server latency.
 */
async function openLoop(target: Target, body: Buffer, rate: number): Promise<Latency> {
  const pool = clients(target.port);
  // Warm the connections up.
  await Promise.all(pool.map(async (client) => (await exchange(client, body, target)).stream.halfClose()));
  const total = Math.round(rate * SECONDS);
  const latencies: number[] = [];
  const lags: number[] = [];
  let failures = 0;
  let outstanding = 0;
  let overloaded = false;
  const inflight: Array<Promise<void>> = [];
  const start = performance.now() + 10;
  let next = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (next < total && start + (next * 1000) / rate <= now) {
        if (outstanding >= MAX_IN_FLIGHT) {
          overloaded = true;
          next = total;
          break;
        }
        const sent = performance.now();
        lags.push(sent - (start + (next * 1000) / rate));
        const client = pool[next % pool.length] as ExtProcClient;
        next++;
        outstanding++;
        inflight.push(
          exchange(client, body, target).then(({ ok, stream }) => {
            latencies.push(performance.now() - sent);
            outstanding--;
            if (!ok) failures++;
            stream.halfClose();
          }),
        );
      }
      if (next >= total) resolve();
      else setTimeout(tick, 1);
    };
    tick();
  });
  await Promise.all(inflight);
  const elapsed = (performance.now() - start) / 1000;
  for (const client of pool) client.close();
  latencies.sort((a, b) => a - b);
  lags.sort((a, b) => a - b);
  return { rate, p50: percentile(latencies, 50), p99: percentile(latencies, 99), lagP99: percentile(lags, 99), achieved: latencies.length / elapsed, failures, overloaded };
}

interface Memory {
  idleMiB: number;
  openMiB: number;
  opened: number;
}

/** RSS once warm and idle, then with 1,000 streams open, each past its body answer (as while Envoy waits for the upstream). */
async function memory(target: Target, body: Buffer): Promise<Memory> {
  const pid = target.process.child.pid as number;
  const pool = clients(target.port);
  for (let i = 0; i < 200; i++) (await exchange(pool[i % pool.length] as ExtProcClient, body, target)).stream.halfClose();
  await sleep(1000);
  const idleMiB = memoryMiB(pid, 'VmRSS');
  const streams: EnvoyStream[] = [];
  let opened = 0;
  for (let batch = 0; batch < OPEN_STREAMS / 100; batch++) {
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => exchange(pool[i % pool.length] as ExtProcClient, body, target)));
    for (const { ok, stream } of results) {
      streams.push(stream);
      if (ok) opened++;
    }
  }
  await sleep(1000);
  const openMiB = memoryMiB(pid, 'VmRSS');
  for (const stream of streams) stream.halfClose();
  await Promise.all(streams.map((s) => s.status));
  for (const client of pool) client.close();
  return { idleMiB, openMiB, opened };
}

function ghzRps(ghz: string, port: number, body: Buffer): number {
  const deps = join(REPO_ROOT, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
  const messages = [
    { request_headers: { headers: { headers: HEADERS.map(([key, value]) => ({ key, raw_value: Buffer.from(value).toString('base64') })) } } },
    { request_body: { body: body.toString('base64'), end_of_stream: true } },
  ];
  const out = execFileSync(
    'taskset',
    [
      '-c', CLIENT_CORE, ghz, '--insecure', '--format', 'json',
      '--proto', 'envoy/service/ext_proc/v3/external_processor.proto',
      '-i', ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => join(deps, d)).join(','),
      '--call', 'envoy.service.ext_proc.v3.ExternalProcessor/Process',
      '-d', JSON.stringify(messages),
      '-c', '64', '--connections', String(CONNECTIONS), '-z', `${SECONDS}s`,
      `127.0.0.1:${port}`,
    ],
    { maxBuffer: 256 * 1024 * 1024 },
  ).toString();
  const report = JSON.parse(out) as { total: number; statusCodeDistribution?: Record<string, number> };
  // With -z, ghz tears its connections down when the time is up: calls then in
  // flight end Canceled, or Unavailable if they were just starting (at most one
  // per worker). Runs with -n instead of -z end all OK.
  const teardown = Object.entries(report.statusCodeDistribution ?? {})
    .filter(([code]) => code === 'Canceled' || code === 'Unavailable')
    .reduce((sum, [, count]) => sum + count, 0);
  const bad = Object.entries(report.statusCodeDistribution ?? {}).filter(([code]) => code !== 'OK' && code !== 'Canceled' && code !== 'Unavailable');
  if (teardown > 64) bad.push(['Canceled+Unavailable', teardown]);
  if (bad.length > 0) throw new Error(`ghz saw non-OK statuses: ${JSON.stringify(bad)}`);
  return (report.statusCodeDistribution?.['OK'] ?? 0) / (report.total / 1e9);
}

interface H2loadResult {
  saturation: H2loadRun;
  serverCpuMsPerRequest: number;
  /** Closed loop with the fewest streams in flight that reaches half the saturation rate. */
  halfLoad: H2loadRun & { inFlight: number };
  /** Open loop at half the saturation rate; h2load starts requests in bursts on a timer tick. */
  openLoop: H2loadRun & { rate: number };
}

const H2LOAD_IN_FLIGHT = [1, 2, 3, 4, 6, 8, 12, 16];
const H2LOAD_OPEN_CONNECTIONS = 4;

/** The same ext_proc stream as exchange(), as one HTTP/2 request body: the framed headers message, then the framed body message. */
function grpcRequestFile(dir: string, body: Buffer): string {
  const { requestSerialize } = processMethod();
  const file = join(dir, `ext-proc-request-${body.length}.bin`);
  writeFileSync(file, Buffer.concat([frameMessage(requestSerialize(headersMessage(HEADERS, false))), frameMessage(requestSerialize(bodyMessage(body, true)))]));
  return file;
}

/**
 * h2load against one server with one request file. It counts the requests it
 * sends, so that check() can compare them with the hashed answers the hasher
 * counted (h2load sees HTTP status only); for BBR, check() has nothing to read.
 */
async function h2loadSession(target: Target, bodyFile: string, logFile: string) {
  const answered0 = await target.answeredCount?.();
  const pid = target.process.child.pid as number;
  let sent = 0;
  const run = (o: Pick<Parameters<typeof h2load>[0], 'requests' | 'connections' | 'streamsPerConnection' | 'ratePerConnection'>): H2loadRun => {
    sent += o.requests;
    return h2load({ url: `http://127.0.0.1:${target.port}${PROCESS_METHOD_PATH}`, bodyFile, core: CLIENT_CORE, logFile, ...o });
  };
  return {
    run,
    /** Closed loop, CONNECTIONS × 32 streams, with the server's CPU per request. */
    saturate(requests: number): H2loadRun & { cpuMsPerRequest: number } {
      const cpu0 = cpuSeconds(pid);
      const result = run({ requests, connections: CONNECTIONS, streamsPerConnection: 32 });
      return { ...result, cpuMsPerRequest: (1000 * (cpuSeconds(pid) - cpu0)) / requests };
    },
    /** Closed loop on one connection with the fewest streams in flight (of `candidates`) that reach `rate`. */
    halfLoad(rate: number, requests: number, candidates: readonly number[] = H2LOAD_IN_FLIGHT): H2loadRun & { inFlight: number } {
      let result: (H2loadRun & { inFlight: number }) | undefined;
      for (const inFlight of candidates) {
        result = { ...run({ requests, connections: 1, streamsPerConnection: inFlight }), inFlight };
        if (result.perSecond >= rate) break;
      }
      if (result === undefined) throw new Error('halfLoad: no stream counts to try');
      return result;
    },
    async check(): Promise<void> {
      if (answered0 === undefined) return;
      const answered = (await target.answeredCount?.()) as number;
      if (answered - answered0 !== sent) throw new Error(`${target.name}: ${answered - answered0} hashed answers for ${sent} h2load requests`);
    },
  };
}

async function measureWithH2load(target: Target, bodyFile: string, dir: string, roughRate: number): Promise<H2loadResult> {
  const session = await h2loadSession(target, bodyFile, join(dir, 'h2load.log'));
  session.run({ requests: 5000, connections: CONNECTIONS, streamsPerConnection: 32 }); // warm-up
  const { cpuMsPerRequest: serverCpuMsPerRequest, ...saturation } = session.saturate(Math.max(10_000, Math.round(roughRate * SECONDS * 2)));
  const half = saturation.perSecond / 2;
  const requests = Math.max(2000, Math.round(half * SECONDS));
  const halfLoad = session.halfLoad(half, requests);
  const perConnection = Math.max(1, Math.round(half / H2LOAD_OPEN_CONNECTIONS));
  const openLoop = { ...session.run({ requests, connections: H2LOAD_OPEN_CONNECTIONS, streamsPerConnection: 64, ratePerConnection: perConnection }), rate: perConnection * H2LOAD_OPEN_CONNECTIONS };
  await session.check();
  return { saturation, serverCpuMsPerRequest, halfLoad, openLoop };
}

interface Pair {
  pair: number;
  size: number;
  ours: H2loadRun & { cpuMsPerRequest: number };
  bbr: H2loadRun & { cpuMsPerRequest: number };
  /** Our closed-loop p99 at half our saturation rate in this pair. */
  oursHalfLoad: H2loadRun & { inFlight: number };
}

/**
 * Both servers started once per body size, then h2load saturation runs
 * alternating between them, PAIRS times. On a shared VM the speed of the
 * machine drifts by tens of percent within minutes; a ratio taken within one
 * pair (seconds apart) cancels most of that, and the median over pairs is
 * robust to a pair that drift still spoils. The closed-loop p99 at half load
 * is measured for the hasher in every pair too.
 */
async function interleavedPairs(startHasher: () => Promise<Target>, startBbr: () => Promise<Target>, scratch: string, pairs: number): Promise<Pair[]> {
  const results: Pair[] = [];
  for (const size of BODY_SIZES) {
    const bodyFile = grpcRequestFile(scratch, chatBody(size));
    const ours = await startHasher();
    const bbr = await startBbr();
    try {
      await Promise.all([waitReady(ours), waitReady(bbr)]);
      const logFile = join(scratch, 'h2load-pairs.log');
      const sessions = new Map([
        [ours, await h2loadSession(ours, bodyFile, logFile)],
        [bbr, await h2loadSession(bbr, bodyFile, logFile)],
      ]);
      const session = (target: Target) => sessions.get(target) as Awaited<ReturnType<typeof h2loadSession>>;
      // Warm both up (V8 tiers up the hasher's code and sizes its heap over the
      // first tens of thousands of requests), and size each run to about
      // SECONDS at each server's own rate.
      session(ours).saturate(30_000);
      const rates = new Map([
        [ours, session(ours).saturate(10_000).perSecond],
        [bbr, session(bbr).saturate(10_000).perSecond],
      ]);
      const saturate = (target: Target) => session(target).saturate(Math.max(5000, Math.round((rates.get(target) as number) * SECONDS)));
      let inFlight: number | undefined;
      for (let pair = 1; pair <= pairs; pair++) {
        const [o, g] = alternatingPair(pair - 1, ours, bbr, saturate);
        const half = o.perSecond / 2;
        // The stream count that reaches half load is found in the first pair and kept.
        const oursHalfLoad = session(ours).halfLoad(half, Math.max(2000, Math.round(half * SECONDS)), inFlight === undefined ? H2LOAD_IN_FLIGHT : [inFlight]);
        inFlight = oursHalfLoad.inFlight;
        const result: Pair = { pair, size, ours: o, bbr: g, oursHalfLoad };
        process.stderr.write(
          `  pair ${pair} ${size} B: hasher ${o.perSecond.toFixed(0)} req/s (${o.cpuMsPerRequest.toFixed(3)} ms CPU/req), BBR ${g.perSecond.toFixed(0)} req/s (${g.cpuMsPerRequest.toFixed(3)}), ` +
            `ratio ${(o.perSecond / g.perSecond).toFixed(2)}; hasher p99 at half load ${oursHalfLoad.p99Ms.toFixed(2)} ms (${oursHalfLoad.inFlight} in flight)\n`,
        );
        results.push(result);
      }
      await session(ours).check();
    } finally {
      await Promise.all([ours.process.stop(), bbr.process.stop()]);
    }
  }
  return results;
}

function reportPairs(pairs: Pair[]): string {
  const lines = [
    'h2load saturation in alternating pairs (both servers started once per body size, each on core 0 in turn; 2 connections × 32 streams):',
    '',
    '| body | pair | hasher req/s | hasher CPU ms per request | BBR req/s | BBR CPU ms per request | ratio by req/s | ratio by CPU per request | hasher p99 at half load, closed loop (streams in flight) |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const p of pairs) {
    lines.push(
      `| ${p.size / 1024} KiB | ${p.pair} | ${p.ours.perSecond.toFixed(0)} | ${p.ours.cpuMsPerRequest.toFixed(3)} | ${p.bbr.perSecond.toFixed(0)} | ${p.bbr.cpuMsPerRequest.toFixed(3)} | ` +
        `${(p.ours.perSecond / p.bbr.perSecond).toFixed(2)} | ${(p.bbr.cpuMsPerRequest / p.ours.cpuMsPerRequest).toFixed(2)} | ${p.oursHalfLoad.p99Ms.toFixed(2)} ms (${p.oursHalfLoad.inFlight}) |`,
    );
  }
  lines.push('');
  for (const size of BODY_SIZES) {
    const ps = pairs.filter((p) => p.size === size);
    if (ps.length === 0) continue;
    const byRps = ps.map((p) => p.ours.perSecond / p.bbr.perSecond);
    const byCpu = ps.map((p) => p.bbr.cpuMsPerRequest / p.ours.cpuMsPerRequest);
    const p99s = ps.map((p) => p.oursHalfLoad.p99Ms);
    const range = (xs: number[]) => `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}`;
    lines.push(
      `- ${size / 1024} KiB, median over ${ps.length} pairs: hasher / BBR = ${median(byRps).toFixed(2)}× by h2load req/s (pairs ${range(byRps)}), ` +
        `${median(byCpu).toFixed(2)}× by CPU per request (pairs ${range(byCpu)}); hasher p99 at half load, closed loop: median ${median(p99s).toFixed(2)} ms, ` +
        `≤ 1 ms in ${p99s.filter((x) => x <= 1).length} of ${p99s.length} pairs`,
    );
  }
  return lines.join('\n');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitReady(target: Target): Promise<void> {
  const deadline = Date.now() + 120_000;
  const [client] = clients(target.port);
  while (Date.now() < deadline) {
    try {
      const { ok, stream } = await Promise.race([exchange(client as ExtProcClient, chatBody(4096), target), sleep(2000).then(() => ({ ok: false, stream: undefined }))]);
      stream?.halfClose();
      if (ok) {
        client?.close();
        return;
      }
    } catch {
      /* not up yet */
    }
    await sleep(500);
  }
  throw new Error(`${target.name} did not answer within 120 s:\n${target.process.tail()}`);
}

interface Result {
  round: number;
  name: string;
  size: number;
  saturation: Saturation;
  latency: Latency;
  ghz: number | undefined;
  h2load: H2loadResult;
  memory: Memory;
}

async function measureTarget(round: number, start: () => Promise<Target>, ghz: string | undefined, scratch: string): Promise<Result[]> {
  const results: Result[] = [];
  for (const size of BODY_SIZES) {
    // A fresh server per body size, so memory and GC state start the same.
    const target = await start();
    try {
      await waitReady(target);
      const body = chatBody(size);
      const mem = await memory(target, body);
      let best: Saturation | undefined;
      for (const concurrency of CONCURRENCIES) {
        const s = await closedLoop(target, body, concurrency);
        process.stderr.write(`  ${target.name} ${size} B c=${concurrency}: ${s.rps.toFixed(0)} req/s, ${s.cpuMsPerRequest.toFixed(3)} CPU ms/req, server CPU ${(100 * s.serverCpu).toFixed(0)}%, client CPU ${(100 * s.clientCpu).toFixed(0)}%, failures ${s.failures}\n`);
        if (best === undefined || s.rps > best.rps) best = s;
      }
      if (best === undefined) throw new Error('no saturation run');
      const latency = await openLoop(target, body, best.rps / 2);
      process.stderr.write(
        `  ${target.name} ${size} B at ${latency.rate.toFixed(0)} req/s: p50 ${latency.p50.toFixed(2)} ms, p99 ${latency.p99.toFixed(2)} ms, schedule lag p99 ${latency.lagP99.toFixed(2)} ms${latency.overloaded ? ', OVERLOADED' : ''}\n`,
      );
      const ghzResult = ghz === undefined ? undefined : ghzRps(ghz, target.port, body);
      const h2 = await measureWithH2load(target, grpcRequestFile(scratch, body), scratch, best.rps);
      process.stderr.write(
        `  ${target.name} ${size} B h2load: ${h2.saturation.perSecond.toFixed(0)} req/s at saturation (${h2.serverCpuMsPerRequest.toFixed(3)} CPU ms/req); ` +
          `${h2.halfLoad.inFlight} in flight: ${h2.halfLoad.perSecond.toFixed(0)} req/s, p50 ${h2.halfLoad.p50Ms.toFixed(2)} p99 ${h2.halfLoad.p99Ms.toFixed(2)} ms; ` +
          `open loop ${h2.openLoop.rate} req/s: p50 ${h2.openLoop.p50Ms.toFixed(2)} p99 ${h2.openLoop.p99Ms.toFixed(2)} ms\n`,
      );
      results.push({ round, name: target.name, size, saturation: best, latency, ghz: ghzResult, h2load: h2, memory: mem });
    } finally {
      await target.process.stop();
    }
  }
  return results;
}

function report(results: Result[]): string {
  const lines = [
    '| round | server | body | req/s at saturation (concurrency) | server CPU | server CPU ms per request | load-generator CPU | p50 / p99 at half rate (schedule lag p99) | ghz req/s (pipelined) | RSS idle → 1,000 open streams |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.round} | ${r.name} | ${r.size / 1024} KiB | ${r.saturation.rps.toFixed(0)} (${r.saturation.concurrency}) | ${(100 * r.saturation.serverCpu).toFixed(0)}% | ${r.saturation.cpuMsPerRequest.toFixed(3)} | ${(100 * r.saturation.clientCpu).toFixed(0)}% | ` +
        `${r.latency.p50.toFixed(2)} / ${r.latency.p99.toFixed(2)} ms at ${r.latency.rate.toFixed(0)} req/s (${r.latency.lagP99.toFixed(1)} ms)${r.latency.overloaded ? ' overloaded' : ''} | ${r.ghz === undefined ? '—' : r.ghz.toFixed(0)} | ` +
        `${r.memory.idleMiB.toFixed(0)} → ${r.memory.openMiB.toFixed(0)} MiB (${r.memory.opened} open) |`,
    );
  }
  lines.push(
    '',
    'h2load (pipelined streams; closed loop at saturation and at half of it, open loop at half of it):',
    '',
    '| round | server | body | req/s at saturation | server CPU ms per request | half load, closed loop: streams in flight, req/s, p50 / p99 / p99.9 / max ms | half load, open loop: req/s, p50 / p99 / p99.9 / max ms |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  );
  const latencyCells = (r: H2loadRun) => `${r.p50Ms.toFixed(2)} / ${r.p99Ms.toFixed(2)} / ${r.p999Ms.toFixed(2)} / ${r.maxMs.toFixed(1)}`;
  for (const r of results) {
    const h = r.h2load;
    lines.push(
      `| ${r.round} | ${r.name} | ${r.size / 1024} KiB | ${h.saturation.perSecond.toFixed(0)} | ${h.serverCpuMsPerRequest.toFixed(3)} | ` +
        `${h.halfLoad.inFlight}, ${h.halfLoad.perSecond.toFixed(0)}, ${latencyCells(h.halfLoad)} | ${h.openLoop.rate}, ${latencyCells(h.openLoop)} |`,
    );
  }
  lines.push('');
  for (const size of BODY_SIZES) {
    const ours = results.filter((r) => r.size === size && r.name === 'prefix hasher');
    const bbr = results.filter((r) => r.size === size && r.name === 'BBR');
    const best = (rs: Result[]) => median(rs.map((r) => r.saturation.rps));
    const cpu = (rs: Result[]) => median(rs.map((r) => r.saturation.cpuMsPerRequest));
    if (ours.length > 0 && bbr.length > 0) {
      lines.push(
        `- ${size / 1024} KiB: measured throughput, prefix hasher / BBR = ${(best(ours) / best(bbr)).toFixed(2)}× (median over rounds); ` +
          `one-core capacity from CPU per request (1 / CPU time), prefix hasher / BBR = ${(cpu(bbr) / cpu(ours)).toFixed(2)}× ` +
          `(${(1000 / cpu(ours)).toFixed(0)} vs ${(1000 / cpu(bbr)).toFixed(0)} req/s per core); ` +
          `h2load saturation, prefix hasher / BBR = ${(median(ours.map((r) => r.h2load.saturation.perSecond)) / median(bbr.map((r) => r.h2load.saturation.perSecond))).toFixed(2)}×; ` +
          `p99 at half load, closed loop (goal ≤ 1 ms): prefix hasher ${ours.map((r) => r.h2load.halfLoad.p99Ms.toFixed(2)).join(', ')} ms, BBR ${bbr.map((r) => r.h2load.halfLoad.p99Ms.toFixed(2)).join(', ')} ms`,
      );
    }
  }
  return lines.join('\n');
}

async function inner(): Promise<void> {
  // Exiting through process.exit runs the test bed's exit hook, which stops every child it started.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
  const [benchBin] = await Promise.all([ensureGoTools(BENCH_TOOLS)]);
  const controlPlane = await startControlPlane();
  const scratch = controlPlane.dir;
  const cli = builtCli();
  try {
    const startHasher = async (): Promise<Target> => {
      const port = await freePort();
      const metricsPort = await freePort();
      const proc = startProcess(
        'taskset',
        ['-c', SERVER_CORE, process.execPath, cli, 'ext-proc', '--host', '127.0.0.1', '--port', String(port), '--metrics-port', String(metricsPort), '--prefix-bytes', String(PREFIX_BYTES)],
        join(scratch, `hasher-${port}.log`),
        // The environment the generated Deployment gives the hasher.
        { ...process.env, ...Object.fromEntries(EXT_PROC_ENV.map((e) => [e.name, e.value])) },
      );
      const answeredCount = async () => sampleSum(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(), 'ext_proc_messages_total', { outcome: 'hashed' });
      return { name: 'prefix hasher', port, process: proc, answered: (r) => setHeaderKeys(r).includes('x-prompt-hash'), answeredCount };
    };
    const startBbr = async (): Promise<Target> => {
      const [port, healthPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
      const proc = startProcess(
        'taskset',
        [
          '-c', SERVER_CORE, join(benchBin, 'bbr'),
          '--secure-serving=false', '--tracing=false', '--metrics-endpoint-auth=false', '--enable-pprof=false',
          '--grpc-port', String(port), '--grpc-health-port', String(healthPort), '--metrics-port', String(metricsPort),
        ],
        join(scratch, `bbr-${port}.log`),
        { ...process.env, KUBECONFIG: controlPlane.kubeconfig },
      );
      // BBR copies the body's "model" into X-Gateway-Model-Name.
      return { name: 'BBR', port, process: proc, answered: (r) => setHeaderKeys(r).includes('x-gateway-model-name') };
    };
    const ghz = args['skip-ghz'] ? undefined : join(benchBin, 'ghz');
    const results: Result[] = [];
    for (let round = 0; round < Number(args.rounds); round++) {
      results.push(...(await measureTarget(round + 1, startHasher, ghz, scratch)));
      results.push(...(await measureTarget(round + 1, startBbr, ghz, scratch)));
    }
    process.stdout.write(`${report(results)}\n`);
    const pairs = Number(args.pairs);
    if (pairs > 0) process.stdout.write(`\n${reportPairs(await interleavedPairs(startHasher, startBbr, scratch, pairs))}\n`);
  } finally {
    await controlPlane.stop();
  }
}

async function outer(): Promise<void> {
  requireH2load();
  // Builds need the module proxy, so they happen before entering the namespace.
  await Promise.all([ensureGoTools(BENCH_TOOLS), ensureGoTools(KUBE_TOOLS), ensureGoTools(ETCD_TOOLS)]);
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const goVersion = spawnSync('go', ['version']).stdout.toString().trim();
  process.stdout.write(`Machine: ${cpus().length} × ${cpu}; Node ${process.version}; ${goVersion}; load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n\n`);
  const child = spawn(
    'unshare',
    ['--net', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', 'taskset', '-c', CLIENT_CORE, process.execPath, import.meta.filename, '--inner', ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  const code = await new Promise<number | null>((resolve) => child.on('exit', (exitCode) => resolve(exitCode)));
  process.stdout.write(`\nLoad average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}\n`);
  process.exitCode = code ?? 1;
}

if (args.inner) await inner();
else await outer();
