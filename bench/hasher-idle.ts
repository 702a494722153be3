// Benchmark (issue 15): is the hasher as fast for everyone else while 1,000
// streams are open and never written? Envoy opens an ext_proc stream per
// HTTP request; a client that stalls before its body leaves the stream open
// with nothing sent. Such streams hold an HTTP/2 stream, a Process phase and
// heap the collector has to mark, so a slower p99 for the rest is the risk.
//
// One run, one hasher (the `ext-proc` command from dist/, with the
// Deployment's environment, pinned to core 0), rounds alternating two
// conditions with alternatingRuns (in order in odd rounds, reversed in even
// ones), so drift of the shared machine's speed lands on both:
// - alone: the load, nothing else open;
// - idle: the same load while IDLE streams are open on connections of their
//   own, each with its HEADERS sent and no message, checked open on the
//   hasher's ext_proc_streams_open gauge before and after the load and reset
//   afterwards.
// The load is h2load on core 1 (bench/h2load.ts; the same pipelined ext_proc
// stream as bench/ext-proc.ts): closed loop on one connection with the
// fewest streams in flight that reach half the saturation rate, then open
// loop at half the saturation rate (h2load --rps: bursts on its timer
// ticks). Saturation and the stream count are measured once, before round 1.
// Every run's requests are checked against the hasher's hashed answers.
// Per run, from /proc and from the hasher's /metrics read between runs: CPU
// per request, how long the hasher waited for its core (schedstat: other
// sessions' work on the shared machine), RSS, V8 collections (count and
// total pause by kind) and the event loop's longest stall.
//
// --trace-gc runs the hasher with V8's --trace-gc-nvp and reports what its
// scavenges and mark-compacts spent their time on in each condition.
//
//   npm run bench:hasher-idle        # node bench/hasher-idle.ts --rounds 8 --seconds 5 --idle 1000 [--trace-gc]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { EnvoyStream, bodyMessage, connectExtProc, headersMessage, type ExtProcClient } from '../ext-proc/envoy-harness.ts';
import { loadXxh64, promptHash } from '../ext-proc/handlers.ts';
import { PROCESS_METHOD_PATH } from '../ext-proc/protocol.ts';
import { freePort, startProcess, waitFor } from '../test/testbed/processes.ts';
import { builtCli } from '../test/testbed/webhook.ts';
import { CHAT_REQUEST_HEADERS, chatTurnTwoBody, h2load, requireH2load, writeExtProcRequest, type H2loadRun } from './h2load.ts';
import { alternatingRunsAsync, cpuSeconds, median, memoryMiB, runQueueWaitSeconds, sampleSum } from './stats.ts';
import { hasherEnv } from './manager-env.ts';

const SERVER_CORE = '0';
const CLIENT_CORE = '1';
const PREFIX_BYTES = 1024;
const GOAL = 1.2;
const IN_FLIGHT = [1, 2, 3, 4, 6, 8, 12, 16];
const OPEN_CONNECTIONS = 4;
const IDLE_CONNECTIONS = 2;
/** A run whose hasher waited less than this for its core (of about SECONDS) counts as one the shared machine left alone. */
const QUIET_WAIT_MS = 150;
/** The event-loop delay sampler's interval in every command (src/process-metrics.ts). */
const LOOP_SAMPLER_MS = 100;

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '8' },
    seconds: { type: 'string', default: '5' },
    idle: { type: 'string', default: '1000' },
    'trace-gc': { type: 'boolean', default: false },
  },
});
const ROUNDS = Number(args.rounds);
const TRACE_GC = args['trace-gc'] as boolean;
const SECONDS = Number(args.seconds);
const IDLE = Number(args.idle);

const HEADERS = CHAT_REQUEST_HEADERS;

interface Scrape {
  hashed: number;
  open: number;
  gcCount: Record<string, number>;
  gcSeconds: Record<string, number>;
  loopMaxMs: number;
}

const GC_KINDS = ['minor', 'major', 'incremental'] as const;

interface RunFigures extends H2loadRun {
  cpuMsPerRequest: number;
  /** How long the hasher's threads waited for a CPU during the run: other work on the shared machine, not the idle streams. */
  runQueueWaitMs: number;
  rssMiB: number;
  /** With --trace-gc: the collections' phase times (V8's --trace-gc-nvp), by kind. */
  phases: Record<GcKind, GcPhases> | undefined;
  gc: Record<string, { count: number; ms: number }>;
  /**
   * The longest event-loop stall the hasher's sampler saw during the run: its
   * largest tick interval minus the 100 ms it ticks at. A stall shows only
   * when it holds up a tick, so this is a lower bound.
   */
  loopStallMs: number;
}

interface ConditionFigures {
  condition: Condition;
  closed: RunFigures;
  open: RunFigures;
  idleOpenBefore: number;
  idleOpenAfter: number;
}

const CONDITIONS = ['alone', 'idle'] as const;
type Condition = (typeof CONDITIONS)[number];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

async function main(): Promise<void> {
  requireH2load();
  const cli = builtCli();
  // This process (the idle streams' client and h2load's parent) shares core 1 with h2load.
  execFileSync('taskset', ['-a', '-p', '-c', CLIENT_CORE, String(process.pid)], { stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'hasher-idle-'));
  process.stdout.write(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}; Node ${process.version}; load average before: ${load()}; started ${new Date().toISOString()}\n`);
  process.stdout.write(`${ROUNDS} rounds, ${IDLE} idle streams, runs of about ${SECONDS} s\n\n`);

  const [port, metricsPort] = [await freePort(), await freePort()];
  const command = ['taskset', '-c', SERVER_CORE, process.execPath, ...(TRACE_GC ? ['--trace-gc-nvp'] : []), cli, 'ext-proc', '--host', '127.0.0.1', '--port', String(port), '--metrics-port', String(metricsPort), '--prefix-bytes', String(PREFIX_BYTES)];
  // V8's GC lines go straight to a file: a pipe to this process, which h2load runs block, would fill and stall the hasher.
  const gcLog = join(dir, 'hasher.gc.log');
  const hasher = startProcess(
    ...((TRACE_GC ? ['sh', ['-c', 'exec "$@" > "$GC_LOG"', 'sh', ...command]] : [command[0], command.slice(1)]) as [string, string[]]),
    join(dir, 'hasher.log'),
    { ...process.env, ...hasherEnv(), GC_LOG: gcLog },
  );
  const pid = hasher.child.pid as number;
  const address = `127.0.0.1:${port}`;
  const body = chatTurnTwoBody();
  const bodyFile = writeExtProcRequest(join(dir, 'request.bin'), HEADERS, body, true);
  const idleClients: ExtProcClient[] = [];
  try {
    const expected = promptHash(body, PREFIX_BYTES, await loadXxh64(), 'Conversation');
    const probe = connectExtProc(address);
    await waitFor('the hasher to answer with the expected x-prompt-hash', async () => (await oneExchange(probe, body)) === expected, 60_000, () => hasher.tail());
    probe.close();

    const metricsText = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const scrape = async (): Promise<Scrape> => {
      // While h2load runs this process is blocked, and the hasher closes the
      // kept-alive metrics connection it idled on: the first try then fails.
      const text = await metricsText().catch(metricsText);
      return {
        hashed: sampleSum(text, 'ext_proc_messages_total', { outcome: 'hashed' }),
        open: sampleSum(text, 'ext_proc_streams_open'),
        gcCount: Object.fromEntries(GC_KINDS.map((kind) => [kind, sampleSum(text, 'nodejs_gc_duration_seconds_count', { kind })])),
        gcSeconds: Object.fromEntries(GC_KINDS.map((kind) => [kind, sampleSum(text, 'nodejs_gc_duration_seconds_sum', { kind })])),
        loopMaxMs: 1000 * sampleSum(text, 'nodejs_eventloop_lag_max_seconds'),
      };
    };
    const url = `http://127.0.0.1:${port}${PROCESS_METHOD_PATH}`;
    const run = (o: { requests: number; connections: number; streamsPerConnection: number; ratePerConnection?: number }) =>
      h2load({ url, bodyFile, core: CLIENT_CORE, logFile: join(dir, 'h2load.log'), ...o });

    /** One h2load run with the hasher's figures for it; every request must have been hashed. */
    const measured = async (o: Parameters<typeof run>[0]): Promise<RunFigures> => {
      // The event-loop figures reset at each scrape: this one starts the run's window.
      const before = await scrape();
      const cpu0 = cpuSeconds(pid);
      const wait0 = runQueueWaitSeconds(pid);
      const gcLogAt = TRACE_GC ? statSync(gcLog).size : 0;
      const result = run(o);
      const cpu = cpuSeconds(pid) - cpu0;
      const runQueueWaitMs = 1000 * (runQueueWaitSeconds(pid) - wait0);
      const rssMiB = memoryMiB(pid, 'VmRSS');
      const after = await scrape();
      if (after.hashed - before.hashed !== o.requests) throw new Error(`${after.hashed - before.hashed} hashed answers for ${o.requests} h2load requests`);
      const gc = Object.fromEntries(
        GC_KINDS.map((kind) => [kind, { count: (after.gcCount[kind] ?? 0) - (before.gcCount[kind] ?? 0), ms: 1000 * ((after.gcSeconds[kind] ?? 0) - (before.gcSeconds[kind] ?? 0)) }]),
      );
      const gcText = TRACE_GC ? readFileSync(gcLog).subarray(gcLogAt).toString('latin1') : undefined;
      const phases = gcText === undefined ? undefined : { s: gcPhases(gcText, 's'), mc: gcPhases(gcText, 'mc') };
      return { ...result, cpuMsPerRequest: (1000 * cpu) / o.requests, runQueueWaitMs, rssMiB, gc, phases, loopStallMs: Math.max(0, after.loopMaxMs - LOOP_SAMPLER_MS) };
    };

    // Warm-up: V8 tiers the hot path up and sizes its heap over the first tens of thousands of requests.
    run({ requests: 30_000, connections: 2, streamsPerConnection: 32 });
    const saturation = run({ requests: 10_000, connections: 2, streamsPerConnection: 32 });
    const half = saturation.perSecond / 2;
    const requests = Math.max(2000, Math.round(half * SECONDS));
    let inFlight = IN_FLIGHT[IN_FLIGHT.length - 1] as number;
    for (const n of IN_FLIGHT) {
      if (run({ requests, connections: 1, streamsPerConnection: n }).perSecond >= half) {
        inFlight = n;
        break;
      }
    }
    const perConnection = Math.max(1, Math.round(half / OPEN_CONNECTIONS));
    process.stdout.write(
      `Saturation ${saturation.perSecond.toFixed(0)} req/s (2 connections × 32 streams); each run: ${requests} requests, closed loop 1 connection × ${inFlight} streams, ` +
        `then open loop ${perConnection * OPEN_CONNECTIONS} req/s over ${OPEN_CONNECTIONS} connections; load average ${load()}\n\n`,
    );

    // This process holds the idle streams, and each h2load run blocks it;
    // that is harmless here, as an idle stream needs nothing from its client
    // (the hasher sends it nothing, and neither side pings).
    for (let i = 0; i < IDLE_CONNECTIONS; i++) idleClients.push(connectExtProc(address, { channel: { 'grpc.use_local_subchannel_pool': 1 } }));
    const condition = async (name: Condition): Promise<ConditionFigures> => {
      const baseline = (await scrape()).open;
      const idle = name === 'idle' ? Array.from({ length: IDLE }, (_, i) => new EnvoyStream(idleClients[i % IDLE_CONNECTIONS] as ExtProcClient)) : [];
      try {
        // Each idle stream's HEADERS reached the hasher: its gauge counts them.
        await waitFor(`${IDLE} idle streams open on the hasher`, async () => (await scrape()).open >= baseline + idle.length, 30_000);
        const idleOpenBefore = (await scrape()).open - baseline;
        // The same pause in both conditions; in the idle one it lets the work of opening the streams settle.
        await sleep(1000);
        const closed = await measured({ requests, connections: 1, streamsPerConnection: inFlight });
        const open = await measured({ requests, connections: OPEN_CONNECTIONS, streamsPerConnection: 64, ratePerConnection: perConnection });
        const idleOpenAfter = (await scrape()).open - baseline;
        if (idleOpenAfter < idle.length) throw new Error(`only ${idleOpenAfter} of ${idle.length} idle streams were still open after the load`);
        return { condition: name, closed, open, idleOpenBefore, idleOpenAfter };
      } finally {
        for (const stream of idle) stream.reset();
        await Promise.all(idle.map((stream) => stream.status));
        await waitFor('the idle streams closed on the hasher', async () => (await scrape()).open <= baseline, 30_000);
      }
    };

    const rounds: Round[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      const ran: Condition[] = [];
      const [alone, idle] = (await alternatingRunsAsync(round - 1, CONDITIONS, (name) => {
        ran.push(name);
        return condition(name);
      })) as [ConditionFigures, ConditionFigures];
      const r: Round = { round, first: ran[0] as Condition, loadAverage: load(), alone, idle };
      rounds.push(r);
      process.stderr.write(
        `  round ${round} (${r.first} first, load ${r.loadAverage}): closed p99 ${alone.closed.p99Ms.toFixed(2)} → ${idle.closed.p99Ms.toFixed(2)} ms (×${(idle.closed.p99Ms / alone.closed.p99Ms).toFixed(2)}), ` +
          `open p99 ${alone.open.p99Ms.toFixed(2)} → ${idle.open.p99Ms.toFixed(2)} ms (×${(idle.open.p99Ms / alone.open.p99Ms).toFixed(2)}); idle streams open ${idle.idleOpenBefore} / ${idle.idleOpenAfter}\n`,
      );
    }
    process.stdout.write(`${report(rounds, inFlight, perConnection * OPEN_CONNECTIONS)}\n`);
  } finally {
    for (const client of idleClients) client.close();
    await hasher.stop();
    process.stdout.write(`\nLoad average after: ${load()}; ended ${new Date().toISOString()}\n`);
  }
}

/** One stream as Envoy plays it; the x-prompt-hash the hasher set, if any. */
async function oneExchange(client: ExtProcClient, body: Buffer): Promise<string | undefined> {
  const stream = new EnvoyStream(client);
  await stream.send(headersMessage(HEADERS, false));
  const answer = await stream.send(bodyMessage(body, true));
  stream.halfClose();
  await stream.status;
  const header = answer?.request_body?.response?.header_mutation?.set_headers?.find((h) => h.header?.key === 'x-prompt-hash');
  return header?.header?.raw_value === undefined ? undefined : Buffer.from(header.header.raw_value).toString('latin1');
}

interface Round {
  round: number;
  first: Condition;
  loadAverage: string;
  alone: ConditionFigures;
  idle: ConditionFigures;
}

/** What a scavenge spends its time on, as means over the scavenges of a run. */
/** V8's --trace-gc-nvp fields summed over the collections of one kind in a run. */
interface GcPhases {
  count: number;
  sums: Record<string, number>;
  maxPauseMs: number;
}

/** Per kind (`s` scavenge, `mc` mark-compact), the fields the report shows: ms, bytes for `promoted` and `new_space_survived`. */
const GC_FIELDS = {
  s: ['pause', 'scavenge.roots', 'scavenge.parallel', 'scavenge.weak_global_handles.identify', 'scavenge.weak_global_handles.process', 'scavenge.update_refs', 'promoted', 'new_space_survived'],
  mc: ['pause', 'mark', 'mark.roots', 'mark.finish_incremental', 'mark.full_closure', 'heap.embedder_tracing_epilogue', 'heap.external.epilogue', 'clear', 'clear.external_string_table', 'clear.weak_global_handles', 'evacuate', 'finish', 'sweep', 'incremental.steps_took'],
} as const;
type GcKind = keyof typeof GC_FIELDS;

/** The collections of one kind among V8's --trace-gc-nvp lines, their fields summed. */
function gcPhases(log: string, kind: GcKind): GcPhases {
  const sums: Record<string, number> = Object.fromEntries(GC_FIELDS[kind].map((f) => [f, 0]));
  let count = 0;
  let maxPauseMs = 0;
  for (const line of log.split('\n')) {
    if (!line.includes(` gc=${kind} `)) continue;
    count++;
    const fields = new Map([...line.matchAll(/ ([\w.]+)=([\d.]+)/g)].map((m) => [m[1] as string, Number(m[2])]));
    for (const f of GC_FIELDS[kind]) sums[f] = (sums[f] ?? 0) + (fields.get(f) ?? 0);
    maxPauseMs = Math.max(maxPauseMs, fields.get('pause') ?? 0);
  }
  return { count, sums, maxPauseMs };
}

const fmtPhase = (field: string, value: number) => (field === 'promoted' || field === 'new_space_survived' ? `${(value / 1024).toFixed(0)} KiB` : `${value.toFixed(3)} ms`);
const gcMs = (f: RunFigures) => GC_KINDS.reduce((sum, kind) => sum + (f.gc[kind]?.ms ?? 0), 0);

function report(rounds: Round[], inFlight: number, openRate: number): string {
  const ms = (x: number) => x.toFixed(2);
  const gcCell = (f: RunFigures) => `${f.gc.major?.count ?? 0} / ${ms(f.gc.major?.ms ?? 0)}; ${f.gc.minor?.count ?? 0} / ${ms(f.gc.minor?.ms ?? 0)}`;
  const lines: string[] = [];
  for (const [kind, label] of [['closed', `closed loop, 1 connection × ${inFlight} streams`], ['open', `open loop, ${openRate} req/s over ${OPEN_CONNECTIONS} connections (bursts)`]] as const) {
    lines.push(
      `### ${label}`,
      '',
      '| round | first | load average | alone p50 / p99 ms | idle p50 / p99 ms | p99 idle / alone | CPU ms per request alone / idle | hasher run-queue wait ms alone / idle | RSS MiB alone / idle | GCs alone: major count / ms; minor count / ms | GCs idle: major count / ms; minor count / ms | longest event-loop stall ms alone / idle (≥) |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const r of rounds) {
      const [a, b] = [r.alone[kind], r.idle[kind]];
      lines.push(
        `| ${r.round} | ${r.first} | ${r.loadAverage} | ${ms(a.p50Ms)} / ${ms(a.p99Ms)} | ${ms(b.p50Ms)} / ${ms(b.p99Ms)} | ${(b.p99Ms / a.p99Ms).toFixed(2)} | ` +
          `${a.cpuMsPerRequest.toFixed(3)} / ${b.cpuMsPerRequest.toFixed(3)} | ${a.runQueueWaitMs.toFixed(0)} / ${b.runQueueWaitMs.toFixed(0)} | ${a.rssMiB.toFixed(0)} / ${b.rssMiB.toFixed(0)} | ${gcCell(a)} | ${gcCell(b)} | ${a.loopStallMs.toFixed(0)} / ${b.loopStallMs.toFixed(0)} |`,
      );
    }
    const ratios = rounds.map((r) => r.idle[kind].p99Ms / r.alone[kind].p99Ms);
    const within = ratios.filter((x) => x <= GOAL).length;
    // The rounds in which other work kept the hasher off its core least: there the ratio is the idle streams' doing, not the machine's.
    const quiet = rounds.filter((r) => r.alone[kind].runQueueWaitMs < QUIET_WAIT_MS && r.idle[kind].runQueueWaitMs < QUIET_WAIT_MS).map((r) => r.idle[kind].p99Ms / r.alone[kind].p99Ms);
    const med = median(ratios);
    const of = (c: Condition, q: 'p50Ms' | 'p99Ms') => ms(median(rounds.map((r) => r[c][kind][q])));
    const per = (c: Condition, figure: (f: RunFigures) => number, digits = 0) => median(rounds.map((r) => figure(r[c][kind]))).toFixed(digits);
    lines.push(
      '',
      `Summary, ${label}, over ${rounds.length} rounds: alone p50 ${of('alone', 'p50Ms')} ms, p99 ${of('alone', 'p99Ms')} ms (medians); with ${IDLE} idle streams p50 ${of('idle', 'p50Ms')} ms, p99 ${of('idle', 'p99Ms')} ms; ` +
        `p99 idle / alone: median ${med.toFixed(2)} (rounds ${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}), within ${GOAL}× in ${within} of ${rounds.length} rounds; ` +
        `goal p99 within ${GOAL}× (median over rounds): ${med <= GOAL ? 'met' : 'NOT met'}. ` +
        `Medians per run, alone / idle: GC pauses ${per('alone', gcMs)} / ${per('idle', gcMs)} ms, run-queue wait ${per('alone', (f) => f.runQueueWaitMs)} / ${per('idle', (f) => f.runQueueWaitMs)} ms, ` +
        `CPU per request ${per('alone', (f) => f.cpuMsPerRequest, 3)} / ${per('idle', (f) => f.cpuMsPerRequest, 3)} ms. ` +
        `Rounds where the hasher waited for its core under ${QUIET_WAIT_MS} ms in both runs: ${quiet.length} of ${rounds.length}` +
        `${quiet.length === 0 ? '' : `, p99 idle / alone ${quiet.map((x) => x.toFixed(2)).join(', ')} (median ${median(quiet).toFixed(2)})`}`,
      '',
    );
    if (rounds[0]?.alone[kind].phases !== undefined) {
      for (const [gcKind, name] of [['s', 'Scavenges'], ['mc', 'Mark-compacts']] as const) {
        // Pooled over every round's run of a condition: mark-compacts are too few per run for a median of means.
        const pooled = (c: Condition) => {
          const all = rounds.map((r) => r[c][kind].phases?.[gcKind] as GcPhases);
          const count = all.reduce((n, p) => n + p.count, 0);
          return { count, maxPauseMs: Math.max(...all.map((p) => p.maxPauseMs)), mean: (f: string) => all.reduce((sum, p) => sum + (p.sums[f] ?? 0), 0) / Math.max(1, count) };
        };
        const [alone, idle] = [pooled('alone'), pooled('idle')];
        lines.push(
          `${name} (V8 --trace-gc-nvp), ${alone.count} alone / ${idle.count} idle, longest pause ${alone.maxPauseMs.toFixed(1)} / ${idle.maxPauseMs.toFixed(1)} ms, mean per collection, alone / idle: ` +
            `${GC_FIELDS[gcKind].map((f) => `${f} ${fmtPhase(f, alone.mean(f))} / ${fmtPhase(f, idle.mean(f))}`).join(', ')}`,
          '',
        );
      }
    }
  }
  return lines.join('\n');
}

// Exiting through process.exit runs the test bed's exit hook, which stops the hasher.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
await main();
