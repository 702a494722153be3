// Benchmark: our ext_proc prefix hasher, in both key modes (`--prefix-key
// Conversation` and `--prefix-key Body`), against the Gateway API Inference
// Extension's body-based router (BBR v1.5.0, non-streaming, plaintext), the
// closest production peer (an ext_proc that reads the body and sets a routing
// header). Same machine, same run, same load generator; each server pinned
// to core 0, the load generator (this process) and the test bed's control
// plane (BBR needs an API server) on core 1.
//
// One ext_proc stream per request, played as Envoy Gateway plays it: request
// headers, wait for the answer, one body message, wait for the answer,
// half-close. The bodies are OpenAI chat requests of a multi-turn
// conversation (system prompt, the history resent, the new user message), so
// the Conversation key reads the opening and skips the rest as it does in
// production:
// - 4 KiB: turn 2's whole request, end_of_stream true, to every server;
// - 32 KiB: for the hasher, the first 32 KiB of a 48 KiB request with
//   end_of_stream false, as Envoy's BufferedPartial mode sends a body over
//   its 32 KiB buffer; for BBR, a whole 32 KiB request (BBR parses the whole
//   document: a cut one is a parse error it answers with a 400).
// Reported per body: requests/s at saturation (closed loop, best of several
// concurrencies), p50/p99 of the exchange at half that rate (open loop, fixed
// arrival schedule, latency from the scheduled start), and server RSS with
// 1,000 open streams. ghz (a Go load generator that pipelines the messages
// without waiting, unlike Envoy) gives a second saturation figure; h2load
// (C, pipelined like ghz) a third, with latency at half load.
//
// Last, alternating runs: the three servers started once per body, then
// rounds of h2load runs taking turns (in order, then in reverse), --pairs
// times, with ratios taken within each round and the median over rounds (the
// machine's speed drifts between rounds far more than within one). Each
// round: saturation of each server; the hashers' closed-loop p99 at half
// their saturation rate; and each server in open loop at half its own
// saturation rate, where h2load starts requests in bursts on a timer tick
// (the open-loop burst p99 and max), plus the Conversation hasher at BBR's
// half rate (the same offered load as BBR). --trace-gc runs the hashers with
// V8's --trace-gc and counts their collections and pauses during each burst.
//
// Every server listens on loopback only: the measuring part runs in a fresh
// network namespace whose only interface is lo (BBR binds all interfaces).
//
// --variant 'label=node flags' (repeatable) adds a hasher with the first
// key and those flags on node's command line (after the Deployment's
// NODE_OPTIONS, so they override it), measured in the same rounds: V8 and
// Node settings against the current hasher and BBR in one run. A variant
// whose flags begin with `cli:<path>` runs that build of the command instead
// (another commit's dist/bin/modelplane-affinity.js): a code change against
// the build before it, in the same rounds. --bodies picks the body cases (4,32).
//
//   node_modules/.bin/node bench/ext-proc.ts [--seconds 5] [--rounds 2] [--pairs 8] [--skip-ghz] [--trace-gc] [--keys Conversation,Body] [--variant 'semi16=--max-semi-space-size=16'] [--variant 'before=cli:/tmp/old/dist/bin/modelplane-affinity.js'] [--bodies 4,32]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { EnvoyStream, bodyMessage, connectExtProc, headersMessage, type ExtProcClient } from '../ext-proc/envoy-harness.ts';
import { startControlPlane } from '../test/testbed/control-plane.ts';
import { alternatingRuns, cpuSeconds, median, memoryMiB, percentile, sampleSum } from './stats.ts';
import { CHAT_REQUEST_HEADERS, h2load, requireH2load, type H2loadRun } from './h2load.ts';
import { frameMessage } from '../ext-proc/grpc-wire.ts';
import { conversationKey } from '../ext-proc/conversation-key.ts';
import { loadXxh64, promptHash } from '../ext-proc/handlers.ts';
import { PROCESS_METHOD_PATH, processMethod, type ProcessingResponse } from '../ext-proc/protocol.ts';
import { BENCH_TOOLS, ETCD_TOOLS, KUBE_TOOLS, REPO_ROOT, ensureGoTools } from '../test/testbed/go-tools.ts';
import { freePort, startProcess, type ManagedProcess } from '../test/testbed/processes.ts';
import { builtCli } from '../test/testbed/webhook.ts';
import { PREFIX_KEYS, type PrefixKey } from '../src/model-service.ts';
import { shape, type Dialogue, type Turn } from './client-shapes.ts';
import { hasherEnv } from './manager-env.ts';

const SERVER_CORE = '0';
const CLIENT_CORE = '1';
const PREFIX_BYTES = 1024;
/** Envoy Gateway's default connection buffer: BufferedPartial sends at most this much of a body. */
const BUFFER_LIMIT = 32768;
const CONCURRENCIES = [16, 64, 256];
const CONNECTIONS = 2;
const OPEN_STREAMS = 1000;

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
    pairs: { type: 'string', default: '8' },
    'skip-ghz': { type: 'boolean', default: false },
    'trace-gc': { type: 'boolean', default: false },
    keys: { type: 'string', default: PREFIX_KEYS.join(',') },
    variant: { type: 'string', multiple: true, default: [] },
    bodies: { type: 'string', default: '4,32' },
    inner: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(args.seconds);
const KEYS = (args.keys as string).split(',').map((key) => {
  if (!(PREFIX_KEYS as readonly string[]).includes(key)) throw new Error(`--keys: ${key} is not one of ${PREFIX_KEYS.join(', ')}`);
  return key as PrefixKey;
});
/** Extra hashers: a label, node command-line flags, and another build of the command if `cli:<path>` comes first. */
const VARIANTS = (args.variant as string[]).map((v) => {
  const at = v.indexOf('=');
  if (at <= 0) throw new Error(`--variant: ${v} is not label=flags`);
  const [first, ...rest] = v.slice(at + 1).split(' ').filter((f) => f !== '');
  const cli = first?.startsWith('cli:') ? first.slice('cli:'.length) : undefined;
  return { label: v.slice(0, at), cli, flags: cli === undefined && first !== undefined ? [first, ...rest] : rest };
});
const BODIES = (args.bodies as string).split(',').map((b) => {
  if (b !== '4' && b !== '32') throw new Error(`--bodies: ${b} is not 4 or 32`);
  return `${b} KiB`;
});

const WORDS = 'the cluster keeps the prefix of this conversation warm so the next turn starts fast über 東京 cache token and a reply cites documents'.split(' ');

function prose(bytes: number, salt: number): string {
  let out = '';
  for (let i = 0; Buffer.byteLength(out) < bytes; i++) out += `${WORDS[(i * 7 + salt) % WORDS.length]} `;
  return out;
}

/** A chat of `turns` turns: a 700-byte system prompt, a 500-byte first question, 1,200-byte answers, 250-byte follow-ups. */
function dialogue(turns: number): Dialogue {
  return { system: prose(700, 1), turns: Array.from({ length: turns }, (_, i): Turn => ({ user: prose(i === 0 ? 500 : 250, i + 2), assistant: prose(1200, i + 3) })) };
}

const CHAT = shape('chat: model first (OpenAI SDK)');
const chatTurn = (turns: number) => Buffer.from(CHAT.body(dialogue(turns), turns - 1));

/** The request of a chat's last turn (the history resent) with the most turns that fit, its last user message padded to make the body exactly `size` bytes. */
export function chatBody(size: number): Buffer {
  let turns = 1;
  while (chatTurn(turns + 1).length <= size) turns++;
  const d = dialogue(turns);
  const last = d.turns[turns - 1] as Turn;
  last.user += 'and so on '.repeat(Math.ceil(size / 10)).slice(0, size - chatTurn(turns).length);
  const body = Buffer.from(CHAT.body(d, turns - 1));
  if (body.length !== size) throw new Error(`built a ${body.length}-byte body, wanted ${size}`);
  return body;
}

/** The first `size` bytes of the request of a chat 1.5 times as long: what Envoy's BufferedPartial mode sends of it (end_of_stream false). */
function cutChatBody(size: number): Buffer {
  let turns = 1;
  while (chatTurn(turns).length < 1.5 * size) turns++;
  return chatTurn(turns).subarray(0, size);
}

interface Message {
  body: Buffer;
  endOfStream: boolean;
}

interface BodyCase {
  name: string;
  /** What the hasher is sent. */
  hasher: Message;
  /** What BBR is sent: always a whole request, which it parses. */
  bbr: Message;
}

function bodyCases(): BodyCase[] {
  const small = { body: chatBody(4096), endOfStream: true };
  const cases = [
    { name: '4 KiB', hasher: small, bbr: small },
    { name: '32 KiB', hasher: { body: cutChatBody(BUFFER_LIMIT), endOfStream: false }, bbr: { body: chatBody(BUFFER_LIMIT), endOfStream: true } },
  ];
  // The Conversation key must come from the chat's opening, not fall back to the Body key.
  for (const c of cases) if (conversationKey(c.hasher.body, PREFIX_BYTES) === undefined) throw new Error(`the ${c.name} body has no Conversation key`);
  return cases.filter((c) => BODIES.includes(c.name));
}

const HEADERS = CHAT_REQUEST_HEADERS;

interface Target {
  name: string;
  port: number;
  process: ManagedProcess;
  /** What this server is sent of a body case. */
  message(c: BodyCase): Message;
  /** Does this body answer carry the header the server exists to set? */
  answered(response: ProcessingResponse | undefined): boolean;
  /** The header value a body must get (checked once per server and body): the hasher's x-prompt-hash. */
  expected?: (body: Buffer) => { header: string; value: string };
  /** Body answers that carried the header, from the server's own metrics (h2load sees HTTP status only). */
  answeredCount?: () => Promise<number>;
  /** The hasher runs with --trace-gc: its collections since `offset` of its log. */
  gcSince?: (offset: number) => GcCounts;
  /** Bytes in its log now (where gcSince starts). */
  logOffset?: () => number;
}

interface GcCounts {
  scavenges: number;
  markCompacts: number;
  /** Longest pause of each kind, ms. */
  maxScavengeMs: number;
  maxMarkCompactMs: number;
}

/** Counts V8 --trace-gc lines ("Scavenge ... MB, 0.52 / 0.00 ms", "Mark-Compact ... MB, 25.1 / 0.00 ms"). */
export function gcCounts(log: string): GcCounts {
  const counts: GcCounts = { scavenges: 0, markCompacts: 0, maxScavengeMs: 0, maxMarkCompactMs: 0 };
  for (const m of log.matchAll(/ms: (Scavenge|Mark-Compact|Minor Mark-Sweep)\b[^\n]*? MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/g)) {
    const pause = Number(m[2]);
    if (m[1] === 'Mark-Compact') {
      counts.markCompacts++;
      counts.maxMarkCompactMs = Math.max(counts.maxMarkCompactMs, pause);
    } else {
      counts.scavenges++;
      counts.maxScavengeMs = Math.max(counts.maxScavengeMs, pause);
    }
  }
  return counts;
}

function setHeaderValue(response: ProcessingResponse | undefined, header: string): string | undefined {
  const found = (response?.request_body?.response?.header_mutation?.set_headers ?? []).find((h) => h.header?.key?.toLowerCase() === header);
  return found?.header?.raw_value === undefined ? undefined : Buffer.from(found.header.raw_value).toString('latin1');
}

function clients(port: number): ExtProcClient[] {
  // Separate subchannel pools, so each client is its own HTTP/2 connection.
  return Array.from({ length: CONNECTIONS }, () => connectExtProc(`127.0.0.1:${port}`, { channel: { 'grpc.use_local_subchannel_pool': 1 } }));
}

/** One request as Envoy plays it; resolves once the body answer came back. */
async function exchange(client: ExtProcClient, message: Message, target: Target): Promise<{ ok: boolean; stream: EnvoyStream; answer: ProcessingResponse | undefined }> {
  const stream = new EnvoyStream(client);
  const headersAnswer = await stream.send(headersMessage(HEADERS, false));
  if (headersAnswer?.request_headers === undefined) return { ok: false, stream, answer: undefined };
  const answer = await stream.send(bodyMessage(message.body, message.endOfStream));
  return { ok: target.answered(answer), stream, answer };
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

async function closedLoop(target: Target, body: Message, concurrency: number): Promise<Saturation> {
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
async function openLoop(target: Target, body: Message, rate: number): Promise<Latency> {
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
async function memory(target: Target, body: Message): Promise<Memory> {
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

function ghzRps(ghz: string, port: number, message: Message): number {
  const deps = join(REPO_ROOT, 'node_modules', '@grpc', 'grpc-js-xds', 'deps');
  const messages = [
    { request_headers: { headers: { headers: HEADERS.map(([key, value]) => ({ key, raw_value: Buffer.from(value).toString('base64') })) } } },
    { request_body: { body: message.body.toString('base64'), end_of_stream: message.endOfStream } },
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
function grpcRequestFile(dir: string, message: Message): string {
  const { requestSerialize } = processMethod();
  const file = join(dir, `ext-proc-request-${message.body.length}${message.endOfStream ? '' : '-partial'}.bin`);
  writeFileSync(file, Buffer.concat([frameMessage(requestSerialize(headersMessage(HEADERS, false))), frameMessage(requestSerialize(bodyMessage(message.body, message.endOfStream)))]));
  return file;
}

type BurstRun = H2loadRun & { rate: number; gc?: GcCounts | undefined };

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
    /**
     * Open loop at `rate` over H2LOAD_OPEN_CONNECTIONS connections. h2load
     * starts each connection's requests on a timer tick, so they arrive in
     * bursts (at 8,000 req/s, about 80 at once every 10 ms).
     */
    burst(rate: number, requests: number): BurstRun {
      const perConnection = Math.max(1, Math.round(rate / H2LOAD_OPEN_CONNECTIONS));
      const offset = target.logOffset?.();
      const result = run({ requests, connections: H2LOAD_OPEN_CONNECTIONS, streamsPerConnection: 64, ratePerConnection: perConnection });
      return { ...result, rate: perConnection * H2LOAD_OPEN_CONNECTIONS, gc: offset === undefined ? undefined : target.gcSince?.(offset) };
    },
    async check(): Promise<void> {
      if (answered0 === undefined) return;
      const answered = (await target.answeredCount?.()) as number;
      if (answered - answered0 !== sent) throw new Error(`${target.name}: ${answered - answered0} hashed answers for ${sent} h2load requests`);
    },
  };
}

type H2loadSession = Awaited<ReturnType<typeof h2loadSession>>;

/** Requests for about SECONDS at `rate`. */
const requestsFor = (rate: number, floor = 2000) => Math.max(floor, Math.round(rate * SECONDS));

async function measureWithH2load(target: Target, bodyFile: string, dir: string, roughRate: number): Promise<H2loadResult> {
  const session = await h2loadSession(target, bodyFile, join(dir, 'h2load.log'));
  session.run({ requests: 5000, connections: CONNECTIONS, streamsPerConnection: 32 }); // warm-up
  const { cpuMsPerRequest: serverCpuMsPerRequest, ...saturation } = session.saturate(requestsFor(roughRate * 2, 10_000));
  const half = saturation.perSecond / 2;
  const halfLoad = session.halfLoad(half, requestsFor(half));
  const openLoop = session.burst(half, requestsFor(half));
  await session.check();
  return { saturation, serverCpuMsPerRequest, halfLoad, openLoop };
}

interface Round {
  round: number;
  body: string;
  /** One entry per target, in the targets' order. */
  saturation: Array<H2loadRun & { cpuMsPerRequest: number }>;
  /** Closed loop at half its own saturation rate in this round: hashers only. */
  halfLoad: Array<(H2loadRun & { inFlight: number }) | undefined>;
  /** Open loop (bursts) at half its own saturation rate in this round. */
  burst: BurstRun[];
  /** The first hasher in open loop at BBR's half rate: the same offered load as BBR. */
  burstAtBbrRate: BurstRun | undefined;
}

/**
 * The servers started once per body, then h2load runs taking turns, in
 * order in even rounds and in reverse in odd ones, PAIRS rounds. On a shared
 * VM the speed of the machine drifts by tens of percent within minutes; a
 * ratio taken within one round (seconds apart) cancels most of that, and the
 * median over rounds is robust to a round that drift still spoils. BBR is
 * the last target.
 */
async function interleavedRounds(starters: Array<() => Promise<Target>>, cases: BodyCase[], scratch: string, rounds: number): Promise<{ names: string[]; rounds: Round[] }> {
  const results: Round[] = [];
  let names: string[] = [];
  for (const c of cases) {
    const targets: Target[] = [];
    try {
      for (const start of starters) targets.push(await start());
      names = targets.map((t) => t.name);
      await Promise.all(targets.map((t) => waitReady(t, c)));
      const logFile = join(scratch, 'h2load-pairs.log');
      const sessions: H2loadSession[] = [];
      for (const t of targets) sessions.push(await h2loadSession(t, grpcRequestFile(scratch, t.message(c)), logFile));
      const bbr = targets.length - 1;
      const hashers = targets.slice(0, bbr);
      // Warm each up (V8 tiers up the hasher's code and sizes its heap over the
      // first tens of thousands of requests), and size each run to about
      // SECONDS at each server's own rate.
      for (const session of sessions.slice(0, bbr)) session.saturate(30_000);
      const rates = sessions.map((session) => session.saturate(10_000).perSecond);
      const inFlight: Array<number | undefined> = [];
      for (let round = 1; round <= rounds; round++) {
        const at = round - 1;
        const saturation = alternatingRuns(at, targets, (_, i) => (sessions[i] as H2loadSession).saturate(requestsFor(rates[i] as number, 5000)));
        const half = saturation.map((s) => s.perSecond / 2);
        // The stream count that reaches half load is found in the first round and kept.
        const halfLoad = [
          ...alternatingRuns(at, hashers, (_, i) => {
            const found = (sessions[i] as H2loadSession).halfLoad(half[i] as number, requestsFor(half[i] as number), inFlight[i] === undefined ? H2LOAD_IN_FLIGHT : [inFlight[i] as number]);
            inFlight[i] = found.inFlight;
            return found;
          }),
          undefined,
        ];
        const burst = alternatingRuns(at, targets, (_, i) => (sessions[i] as H2loadSession).burst(half[i] as number, requestsFor(half[i] as number)));
        const bbrHalf = half[bbr] as number;
        const burstAtBbrRate = bbr > 0 ? (sessions[0] as H2loadSession).burst(bbrHalf, requestsFor(bbrHalf)) : undefined;
        const result: Round = { round, body: c.name, saturation, halfLoad, burst, burstAtBbrRate };
        const cells = targets.map(
          (t, i) =>
            `${t.name} ${saturation[i]?.perSecond.toFixed(0)} req/s (${saturation[i]?.cpuMsPerRequest.toFixed(3)} ms CPU)` +
            `${halfLoad[i] === undefined ? '' : `, half-load p99 ${halfLoad[i]?.p99Ms.toFixed(2)} ms`}, burst p99 ${burst[i]?.p99Ms.toFixed(1)} max ${burst[i]?.maxMs.toFixed(1)} ms`,
        );
        process.stderr.write(`  round ${round} ${c.name}: ${cells.join('; ')}\n`);
        results.push(result);
      }
      for (const session of sessions) await session.check();
      // Each process's peak RSS over every run of this body, against the Deployment's 256 MiB limit.
      process.stderr.write(`  peak RSS (VmHWM) after the ${c.name} rounds: ${targets.map((t) => `${t.name} ${memoryMiB(t.process.child.pid as number, 'VmHWM').toFixed(0)} MiB`).join('; ')}\n`);
    } finally {
      await Promise.all(targets.map((t) => t.process.stop()));
    }
  }
  return { names, rounds: results };
}

const fixed = (x: number | undefined, digits = 2) => (x === undefined ? '—' : x.toFixed(digits));
const range = (xs: number[], digits = 2) => `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;
const burstCell = (b: BurstRun | undefined) =>
  b === undefined ? '—' : `${b.rate}: ${fixed(b.p50Ms)} / ${fixed(b.p99Ms)} / ${fixed(b.maxMs, 1)}${b.gc === undefined ? '' : ` (${b.gc.markCompacts} MC ≤ ${fixed(b.gc.maxMarkCompactMs, 1)} ms, ${b.gc.scavenges} scav. ≤ ${fixed(b.gc.maxScavengeMs, 1)} ms)`}`;

function reportRounds({ names, rounds }: { names: string[]; rounds: Round[] }): string {
  const bbr = names.length - 1;
  const hashers = names.slice(0, bbr);
  const lines = [
    `h2load in alternating rounds (the servers started once per body, each on core 0 in turn, in order in odd rounds and in reverse in even ones). Saturation: 2 connections × 32 streams; half load, closed loop: 1 connection, the fewest streams in flight that reach half the saturation rate; bursts: open loop at half the server's own saturation rate over ${H2LOAD_OPEN_CONNECTIONS} connections, requests started on h2load's timer ticks.`,
    '',
    `| body | round | ${names.map((n) => `${n} req/s (CPU ms per request)`).join(' | ')} | ${hashers.map((n) => `${n} / BBR by CPU per request`).join(' | ')} | ${hashers.map((n) => `${n} p99 at half load, closed loop (streams)`).join(' | ')} |`,
    `|${' --- |'.repeat(2 + names.length + 2 * hashers.length)}`,
  ];
  const ratio = (r: Round, i: number) => (r.saturation[bbr]?.cpuMsPerRequest as number) / (r.saturation[i]?.cpuMsPerRequest as number);
  for (const r of rounds) {
    lines.push(
      `| ${r.body} | ${r.round} | ${r.saturation.map((s) => `${s.perSecond.toFixed(0)} (${s.cpuMsPerRequest.toFixed(3)})`).join(' | ')} | ` +
        `${hashers.map((_, i) => ratio(r, i).toFixed(2)).join(' | ')} | ${hashers.map((_, i) => `${fixed(r.halfLoad[i]?.p99Ms)} ms (${r.halfLoad[i]?.inFlight})`).join(' | ')} |`,
    );
  }
  lines.push(
    '',
    'Open-loop bursts at half load, p50 / p99 / max ms (rate in req/s first):',
    '',
    `| body | round | ${names.join(' | ')} | ${names[0]} at BBR's rate |`,
    `|${' --- |'.repeat(3 + names.length)}`,
  );
  for (const r of rounds) lines.push(`| ${r.body} | ${r.round} | ${r.burst.map(burstCell).join(' | ')} | ${burstCell(r.burstAtBbrRate)} |`);
  lines.push('');
  for (const body of [...new Set(rounds.map((r) => r.body))]) {
    const rs = rounds.filter((r) => r.body === body);
    for (const [i, name] of hashers.entries()) {
      const byRps = rs.map((r) => (r.saturation[i]?.perSecond as number) / (r.saturation[bbr]?.perSecond as number));
      const byCpu = rs.map((r) => ratio(r, i));
      const p99s = rs.map((r) => r.halfLoad[i]?.p99Ms as number);
      const burstP99 = rs.map((r) => (r.burst[i]?.p99Ms as number) / (r.burst[bbr]?.p99Ms as number));
      lines.push(
        `- ${body}, ${name}, median over ${rs.length} rounds: / BBR = ${median(byCpu).toFixed(2)}× by CPU per request (rounds ${range(byCpu)}), ${median(byRps).toFixed(2)}× by h2load req/s (rounds ${range(byRps)}); ` +
          `p99 at half load, closed loop: median ${median(p99s).toFixed(2)} ms, ≤ 1 ms in ${p99s.filter((x) => x <= 1).length} of ${p99s.length}; ` +
          `bursts: p99 median ${median(rs.map((r) => r.burst[i]?.p99Ms as number)).toFixed(1)} ms against BBR's ${median(rs.map((r) => r.burst[bbr]?.p99Ms as number)).toFixed(1)} ms ` +
          `(ratio median ${median(burstP99).toFixed(2)}, ≤ BBR's in ${burstP99.filter((x) => x <= 1).length} of ${rs.length}), ` +
          `max ${range(rs.map((r) => r.burst[i]?.maxMs as number), 1)} ms against BBR's ${range(rs.map((r) => r.burst[bbr]?.maxMs as number), 1)} ms`,
      );
    }
  }
  return lines.join('\n');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Until the server answers; then, once, that the answer carries the expected header value. */
async function waitReady(target: Target, c: BodyCase): Promise<void> {
  const deadline = Date.now() + 120_000;
  const [client] = clients(target.port);
  const message = target.message(c);
  while (Date.now() < deadline) {
    try {
      const { ok, stream, answer } = await Promise.race([exchange(client as ExtProcClient, message, target), sleep(2000).then(() => ({ ok: false, stream: undefined, answer: undefined }))]);
      stream?.halfClose();
      if (ok) {
        client?.close();
        const expected = target.expected?.(message.body);
        if (expected !== undefined && setHeaderValue(answer, expected.header) !== expected.value) {
          throw new Error(`${target.name} answered ${expected.header}: ${setHeaderValue(answer, expected.header)}, expected ${expected.value}`);
        }
        return;
      }
    } catch (error) {
      if (error instanceof Error && error.message.startsWith(target.name)) throw error;
      /* not up yet */
    }
    await sleep(500);
  }
  throw new Error(`${target.name} did not answer within 120 s:\n${target.process.tail()}`);
}

interface Result {
  round: number;
  name: string;
  body: string;
  saturation: Saturation;
  latency: Latency;
  ghz: number | undefined;
  h2load: H2loadResult;
  memory: Memory;
}

async function measureTarget(round: number, start: () => Promise<Target>, cases: BodyCase[], ghz: string | undefined, scratch: string): Promise<Result[]> {
  const results: Result[] = [];
  for (const c of cases) {
    // A fresh server per body, so memory and GC state start the same.
    const target = await start();
    try {
      await waitReady(target, c);
      const message = target.message(c);
      const mem = await memory(target, message);
      let best: Saturation | undefined;
      for (const concurrency of CONCURRENCIES) {
        const s = await closedLoop(target, message, concurrency);
        process.stderr.write(`  ${target.name} ${c.name} c=${concurrency}: ${s.rps.toFixed(0)} req/s, ${s.cpuMsPerRequest.toFixed(3)} CPU ms/req, server CPU ${(100 * s.serverCpu).toFixed(0)}%, client CPU ${(100 * s.clientCpu).toFixed(0)}%, failures ${s.failures}\n`);
        if (best === undefined || s.rps > best.rps) best = s;
      }
      if (best === undefined) throw new Error('no saturation run');
      const latency = await openLoop(target, message, best.rps / 2);
      process.stderr.write(
        `  ${target.name} ${c.name} at ${latency.rate.toFixed(0)} req/s: p50 ${latency.p50.toFixed(2)} ms, p99 ${latency.p99.toFixed(2)} ms, schedule lag p99 ${latency.lagP99.toFixed(2)} ms${latency.overloaded ? ', OVERLOADED' : ''}\n`,
      );
      const ghzResult = ghz === undefined ? undefined : ghzRps(ghz, target.port, message);
      const h2 = await measureWithH2load(target, grpcRequestFile(scratch, message), scratch, best.rps);
      process.stderr.write(
        `  ${target.name} ${c.name} h2load: ${h2.saturation.perSecond.toFixed(0)} req/s at saturation (${h2.serverCpuMsPerRequest.toFixed(3)} CPU ms/req); ` +
          `${h2.halfLoad.inFlight} in flight: ${h2.halfLoad.perSecond.toFixed(0)} req/s, p50 ${h2.halfLoad.p50Ms.toFixed(2)} p99 ${h2.halfLoad.p99Ms.toFixed(2)} ms; ` +
          `open loop ${h2.openLoop.rate} req/s: p50 ${h2.openLoop.p50Ms.toFixed(2)} p99 ${h2.openLoop.p99Ms.toFixed(2)} ms\n`,
      );
      results.push({ round, name: target.name, body: c.name, saturation: best, latency, ghz: ghzResult, h2load: h2, memory: mem });
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
      `| ${r.round} | ${r.name} | ${r.body} | ${r.saturation.rps.toFixed(0)} (${r.saturation.concurrency}) | ${(100 * r.saturation.serverCpu).toFixed(0)}% | ${r.saturation.cpuMsPerRequest.toFixed(3)} | ${(100 * r.saturation.clientCpu).toFixed(0)}% | ` +
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
      `| ${r.round} | ${r.name} | ${r.body} | ${h.saturation.perSecond.toFixed(0)} | ${h.serverCpuMsPerRequest.toFixed(3)} | ` +
        `${h.halfLoad.inFlight}, ${h.halfLoad.perSecond.toFixed(0)}, ${latencyCells(h.halfLoad)} | ${h.openLoop.rate}, ${latencyCells(h.openLoop)} |`,
    );
  }
  lines.push('');
  const names = [...new Set(results.map((r) => r.name))].filter((n) => n !== 'BBR');
  for (const body of [...new Set(results.map((r) => r.body))]) {
    const bbr = results.filter((r) => r.body === body && r.name === 'BBR');
    const best = (rs: Result[]) => median(rs.map((r) => r.saturation.rps));
    const cpu = (rs: Result[]) => median(rs.map((r) => r.saturation.cpuMsPerRequest));
    for (const name of names) {
      const ours = results.filter((r) => r.body === body && r.name === name);
      if (ours.length === 0 || bbr.length === 0) continue;
      lines.push(
        `- ${body}, ${name}: measured throughput / BBR = ${(best(ours) / best(bbr)).toFixed(2)}× (median over rounds); ` +
          `one-core capacity from CPU per request (1 / CPU time) / BBR = ${(cpu(bbr) / cpu(ours)).toFixed(2)}× ` +
          `(${(1000 / cpu(ours)).toFixed(0)} vs ${(1000 / cpu(bbr)).toFixed(0)} req/s per core); ` +
          `h2load saturation / BBR = ${(median(ours.map((r) => r.h2load.saturation.perSecond)) / median(bbr.map((r) => r.h2load.saturation.perSecond))).toFixed(2)}×; ` +
          `p99 at half load, closed loop (goal ≤ 1 ms): ${ours.map((r) => r.h2load.halfLoad.p99Ms.toFixed(2)).join(', ')} ms, BBR ${bbr.map((r) => r.h2load.halfLoad.p99Ms.toFixed(2)).join(', ')} ms`,
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
  const hash64 = await loadXxh64();
  const cases = bodyCases();
  try {
    const startHasher = (prefixKey: PrefixKey, variant?: { label: string; cli: string | undefined; flags: string[] }) => async (): Promise<Target> => {
      const port = await freePort();
      const metricsPort = await freePort();
      const command = [
        'taskset', '-c', SERVER_CORE, process.execPath, ...(variant?.flags ?? []), variant?.cli ?? cli, 'ext-proc',
        '--host', '127.0.0.1', '--port', String(port), '--metrics-port', String(metricsPort), '--prefix-bytes', String(PREFIX_BYTES), '--prefix-key', prefixKey,
      ];
      // With --trace-gc, V8's lines go straight to a file, line-buffered: a
      // pipe to this process, which h2load runs block, would fill and stall the server.
      const gcLog = join(scratch, `hasher-${port}.gc.log`);
      if (args['trace-gc']) command.splice(3, 1, 'stdbuf', '-oL', process.execPath, '--trace-gc');
      const proc = startProcess(
        ...((args['trace-gc'] ? ['sh', ['-c', 'exec "$@" > "$GC_LOG"', 'sh', ...command]] : [command[0], command.slice(1)]) as [string, string[]]),
        join(scratch, `hasher-${port}.log`),
        // The environment the generated Deployment gives the hasher.
        { ...process.env, ...hasherEnv(), GC_LOG: gcLog },
      );
      const scrape = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      // A kept-alive connection the server closed while idle fails the first try.
      const answeredCount = async () => sampleSum(await scrape().catch(scrape), 'ext_proc_messages_total', { outcome: 'hashed' });
      const gc = args['trace-gc'] ? { logOffset: () => statSync(gcLog).size, gcSince: (offset: number) => gcCounts(readFileSync(gcLog).subarray(offset).toString('latin1')) } : {};
      return {
        name: `hasher ${prefixKey}${variant === undefined ? '' : ` ${variant.label}`}`,
        port,
        process: proc,
        message: (c) => c.hasher,
        answered: (r) => setHeaderValue(r, 'x-prompt-hash') !== undefined,
        expected: (body) => ({ header: 'x-prompt-hash', value: promptHash(body, PREFIX_BYTES, hash64, prefixKey) }),
        answeredCount,
        ...gc,
      };
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
      return { name: 'BBR', port, process: proc, message: (c) => c.bbr, answered: (r) => setHeaderValue(r, 'x-gateway-model-name') !== undefined };
    };
    const starters = [...KEYS.map((key) => startHasher(key)), ...VARIANTS.map((v) => startHasher(KEYS[0] as PrefixKey, v)), startBbr];
    const ghz = args['skip-ghz'] ? undefined : join(benchBin, 'ghz');
    const results: Result[] = [];
    for (let round = 0; round < Number(args.rounds); round++) {
      for (const start of starters) results.push(...(await measureTarget(round + 1, start, cases, ghz, scratch)));
    }
    if (results.length > 0) process.stdout.write(`${report(results)}\n`);
    const pairs = Number(args.pairs);
    if (pairs > 0) process.stdout.write(`\n${reportRounds(await interleavedRounds(starters, cases, scratch, pairs))}\n`);
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
  process.stdout.write(`Machine: ${cpus().length} × ${cpu}; Node ${process.version}; ${goVersion}; load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')}; started ${new Date().toISOString()}\n\n`);
  const child = spawn(
    'unshare',
    ['--net', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh', 'taskset', '-c', CLIENT_CORE, process.execPath, import.meta.filename, '--inner', ...process.argv.slice(2)],
    { stdio: 'inherit' },
  );
  const code = await new Promise<number | null>((resolve) => child.on('exit', (exitCode) => resolve(exitCode)));
  process.stdout.write(`\nLoad average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ended ${new Date().toISOString()}\n`);
  process.exitCode = code ?? 1;
}

if (args.inner) await inner();
else await outer();
