// Benchmark (issue 14): how much of the hasher's open-loop burst tail is
// node:http2's? node:http2 makes every received header value a V8 external
// string, which V8 allocates in the old generation: ~5 per stream, garbage
// only a mark-compact frees, and 'clear.external_string_table' is 5-20 ms of
// each such pause. Two do-nothing ext_proc servers that answer alike:
// - node:http2: bench/noop-ext-proc.ts, served as the hasher was;
// - raw: bench/raw-h2-noop.ts, on the hasher's own HTTP/2 framing
//   (ext-proc/h2-connection.ts), which makes no such strings.
// If the mark-compacts and the burst p99 go with the transport, the raw one
// has (almost) none. (Until 3a636ab raw-h2-noop.ts had framing of its own and
// a --reuse-read-buffer arm; RESULTS keeps what those runs showed.)
//
// Each server is started once, pinned to core 0, with V8's --trace-gc-nvp
// and the hasher Deployment's environment (manager-env.ts hasherEnv: its
// --max-semi-space-size=2 and malloc thresholds); h2load runs on core 1 (the
// pipelined ext_proc stream of bench/h2load.ts, a ~4 KiB body). A warm-up
// saturation run per server first (V8 tiers up and sizes its heap), which
// also fixes node:http2's rate for the runs at one load. Rounds alternate
// the order of the runs (alternatingRuns). Each run: saturation (2
// connections × 32 streams), then open loop over 4 connections (h2load
// --rps: bursts on its timer ticks), about SECONDS long, at half the
// server's own saturation rate, or for a raw server also at half
// node:http2's, so the tails compare at one load. From the GC lines of the
// open-loop run: scavenges, mark-compacts, their pauses, promoted bytes and
// the external-string-table clearing.
//
//   flock /tmp/mpa-bench.lock node bench/transport-gc.ts --rounds 4
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { connectExtProc, playRequest } from '../ext-proc/envoy-harness.ts';
import { PROCESS_METHOD_PATH } from '../ext-proc/protocol.ts';
import { freePort, startProcess, waitFor, type ManagedProcess } from '../test/testbed/processes.ts';
import { sizedChatBody } from './data-plane-load.ts';
import { CHAT_REQUEST_HEADERS, h2load, requireH2load, writeExtProcRequest, type H2loadRun } from './h2load.ts';
import { hasherEnv } from './manager-env.ts';
import { alternatingRuns, cpuSeconds, formatRow, median } from './stats.ts';

const SERVER_CORE = '0';
const CLIENT_CORE = '1';
const SATURATION_REQUESTS = 50_000;
const OPEN_CONNECTIONS = 4;
const OPEN_STREAMS = 64;
const BODY_BYTES = 4096;

const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    seconds: { type: 'string', default: '5' },
  },
});
const ROUNDS = Number(args.rounds);
const SECONDS = Number(args.seconds);
if (!(ROUNDS >= 1 && ROUNDS <= 50)) throw new Error(`--rounds ${args.rounds}: give a whole number from 1 to 50`);
if (!(SECONDS >= 1 && SECONDS <= 60)) throw new Error(`--seconds ${args.seconds}: give a number of seconds from 1 to 60`);

const SERVERS = [
  { name: 'node:http2', file: 'noop-ext-proc.ts' },
  { name: 'raw', file: 'raw-h2-noop.ts' },
] as const;
type ServerName = (typeof SERVERS)[number]['name'];

/** A run: a server, and whose saturation rate its open loop runs at half of. */
interface Target {
  server: ServerName;
  rate: 'own' | 'node:http2';
}
const TARGETS: Target[] = [
  { server: 'node:http2', rate: 'own' },
  { server: 'raw', rate: 'own' },
  { server: 'raw', rate: 'node:http2' },
];
const label = (t: Target) => (t.rate === 'own' ? t.server : `${t.server} at node:http2's rate`);

interface Running {
  name: ServerName;
  process: ManagedProcess;
  pid: number;
  port: number;
  gcLog: string;
}

/** What V8's --trace-gc-nvp lines say of one run. */
interface GcFigures {
  scavenges: number;
  markCompacts: number;
  markCompactMs: number;
  longestMarkCompactMs: number;
  /** Bytes, over every collection's `promoted=`. */
  promoted: number;
  /** The mark-compacts' 'clear.external_string_table', ms. */
  externalStringTableMs: number;
}

interface ServerRound {
  saturation: H2loadRun;
  saturationCpuMsPerRequest: number;
  openRate: number;
  open: H2loadRun;
  openCpuMsPerRequest: number;
  gc: GcFigures;
}

const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');

/** The figures of the GC lines in `log` (one per collection: ` pause=… gc=s|mc …`). */
function gcFigures(log: string): GcFigures {
  const figures: GcFigures = { scavenges: 0, markCompacts: 0, markCompactMs: 0, longestMarkCompactMs: 0, promoted: 0, externalStringTableMs: 0 };
  const field = (line: string, name: string) => Number(new RegExp(` ${name.replaceAll('.', '\\.')}=([\\d.]+)`).exec(line)?.[1] ?? 0);
  for (const line of log.split('\n')) {
    const kind = / gc=(\w+) /.exec(line)?.[1];
    if (kind === undefined) continue;
    figures.promoted += field(line, 'promoted');
    if (kind === 's') figures.scavenges++;
    if (kind !== 'mc') continue;
    const pause = field(line, 'pause');
    figures.markCompacts++;
    figures.markCompactMs += pause;
    figures.longestMarkCompactMs = Math.max(figures.longestMarkCompactMs, pause);
    figures.externalStringTableMs += field(line, 'clear.external_string_table');
  }
  return figures;
}

async function start(server: (typeof SERVERS)[number], dir: string, logName: string): Promise<Running> {
  const { name, file } = server;
  const port = await freePort();
  const gcLog = join(dir, `${logName}.gc.log`);
  const command = ['taskset', '-c', SERVER_CORE, process.execPath, '--trace-gc-nvp', fileURLToPath(new URL(file, import.meta.url)), '127.0.0.1', String(port)];
  // V8's GC lines go straight to a file: a pipe to this process, which h2load runs block, would fill and stall the server.
  const child = startProcess('sh', ['-c', 'exec "$@" > "$GC_LOG"', 'sh', ...command], join(dir, `${logName}.log`), { ...process.env, ...hasherEnv(), GC_LOG: gcLog });
  const client = connectExtProc(`127.0.0.1:${port}`);
  try {
    // One exchange from grpc-js: the server speaks gRPC, not only what h2load checks (a 2xx status).
    const ok = async () => (await playRequest(client, { headers: CHAT_REQUEST_HEADERS, body: Buffer.alloc(16) })).status.code === 0;
    await waitFor(`${name} to answer a grpc-js call with CONTINUE and status OK`, ok, 30_000, () => child.tail());
  } finally {
    client.close();
  }
  return { name, process: child, pid: child.child.pid as number, port, gcLog };
}

async function main(): Promise<void> {
  requireH2load();
  // This process (h2load's parent) shares core 1 with h2load.
  execFileSync('taskset', ['-a', '-p', '-c', CLIENT_CORE, String(process.pid)], { stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'transport-gc-'));
  process.stdout.write(`Machine: ${cpus().length} × ${cpus()[0]?.model ?? 'unknown CPU'}; Node ${process.version}; load average before: ${load()}; started ${new Date().toISOString()}\n`);
  process.stdout.write(`${ROUNDS} rounds; servers on core ${SERVER_CORE} with --trace-gc-nvp and the hasher Deployment's environment, h2load on core ${CLIENT_CORE}; logs in ${dir}\n\n`);
  const bodyFile = writeExtProcRequest(join(dir, 'request.bin'), CHAT_REQUEST_HEADERS, Buffer.from(sizedChatBody(BODY_BYTES, 'transport-gc')), true);
  const servers: Running[] = [];
  try {
    for (const [i, s] of SERVERS.entries()) servers.push(await start(s, dir, `server-${i}`));
    const byName = (name: ServerName) => servers.find((s) => s.name === name) as Running;
    const run = (server: Running, o: { requests: number; connections: number; streamsPerConnection: number; ratePerConnection?: number }) => {
      const cpu0 = cpuSeconds(server.pid);
      const result = h2load({ url: `http://127.0.0.1:${server.port}${PROCESS_METHOD_PATH}`, bodyFile, core: CLIENT_CORE, logFile: join(dir, 'h2load.log'), ...o });
      return { result, cpuMsPerRequest: (1000 * (cpuSeconds(server.pid) - cpu0)) / o.requests };
    };
    const saturate = (server: Running) => run(server, { requests: SATURATION_REQUESTS, connections: 2, streamsPerConnection: 32 });
    const warmUp = servers.map(saturate);
    const http2Rate = (warmUp[0] as ReturnType<typeof saturate>).result.perSecond / 2;
    process.stdout.write(`Warm-up saturation: ${servers.map((s, i) => `${s.name} ${warmUp[i]?.result.perSecond.toFixed(0)} req/s`).join(', ')}; node:http2's rate for the runs at one load: ${http2Rate.toFixed(0)} req/s; load average ${load()}\n\n`);
    const measure = (target: Target): ServerRound => {
      const server = byName(target.server);
      const saturation = saturate(server);
      const ratePerConnection = Math.max(1, Math.round((target.rate === 'own' ? saturation.result.perSecond / 2 : http2Rate) / OPEN_CONNECTIONS));
      const requests = Math.max(2000, Math.round(ratePerConnection * OPEN_CONNECTIONS * SECONDS));
      const gcAt = statSync(server.gcLog).size;
      const open = run(server, { requests, connections: OPEN_CONNECTIONS, streamsPerConnection: OPEN_STREAMS, ratePerConnection });
      const gc = gcFigures(readFileSync(server.gcLog).subarray(gcAt).toString('latin1'));
      return { saturation: saturation.result, saturationCpuMsPerRequest: saturation.cpuMsPerRequest, openRate: ratePerConnection * OPEN_CONNECTIONS, open: open.result, openCpuMsPerRequest: open.cpuMsPerRequest, gc };
    };

    const rounds: { first: string; loadAverage: string; figures: ServerRound[] }[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const ran: string[] = [];
      const figures = alternatingRuns(round, TARGETS, (target) => {
        ran.push(label(target));
        return measure(target);
      });
      rounds.push({ first: ran[0] as string, loadAverage: load(), figures });
      process.stderr.write(`  round ${round + 1} (${ran[0]} first, load ${load()}): open p99 ${figures.map((f, i) => `${label(TARGETS[i] as Target)} ${f.open.p99Ms.toFixed(1)} ms (${f.gc.markCompacts} MC)`).join(', ')}\n`);
    }

    const columns = ['saturation req/s', 'CPU ms/req saturation / open', 'open rate req/s', 'open p50 / p99 / max ms', 'scavenges', 'MC', 'MC pause total / longest ms', 'promoted MiB', 'MC clear.external_string_table ms'];
    const cells = (f: ServerRound) => [
      f.saturation.perSecond.toFixed(0),
      `${f.saturationCpuMsPerRequest.toFixed(3)} / ${f.openCpuMsPerRequest.toFixed(3)}`,
      f.openRate,
      `${f.open.p50Ms.toFixed(2)} / ${f.open.p99Ms.toFixed(2)} / ${f.open.maxMs.toFixed(1)}`,
      f.gc.scavenges,
      f.gc.markCompacts,
      `${f.gc.markCompactMs.toFixed(1)} / ${f.gc.longestMarkCompactMs.toFixed(1)}`,
      (f.gc.promoted / 2 ** 20).toFixed(2),
      f.gc.externalStringTableMs.toFixed(1),
    ];
    const lines = [`| round | first | load average | run | ${columns.join(' | ')} |`, `|${' --- |'.repeat(columns.length + 4)}`];
    for (const [i, r] of rounds.entries()) for (const [k, t] of TARGETS.entries()) lines.push(formatRow([i + 1, r.first, r.loadAverage, label(t), ...cells(r.figures[k] as ServerRound)]));
    for (const [k, t] of TARGETS.entries()) {
      const m = (figure: (f: ServerRound) => number) => median(rounds.map((r) => figure(r.figures[k] as ServerRound)));
      const medianRound: ServerRound = {
        saturation: { ...(rounds[0]?.figures[k] as ServerRound).saturation, perSecond: m((f) => f.saturation.perSecond) },
        saturationCpuMsPerRequest: m((f) => f.saturationCpuMsPerRequest),
        openRate: m((f) => f.openRate),
        open: { ...(rounds[0]?.figures[k] as ServerRound).open, p50Ms: m((f) => f.open.p50Ms), p99Ms: m((f) => f.open.p99Ms), maxMs: m((f) => f.open.maxMs) },
        openCpuMsPerRequest: m((f) => f.openCpuMsPerRequest),
        gc: {
          scavenges: m((f) => f.gc.scavenges),
          markCompacts: m((f) => f.gc.markCompacts),
          markCompactMs: m((f) => f.gc.markCompactMs),
          longestMarkCompactMs: m((f) => f.gc.longestMarkCompactMs),
          promoted: m((f) => f.gc.promoted),
          externalStringTableMs: m((f) => f.gc.externalStringTableMs),
        },
      };
      lines.push(formatRow(['median', '', '', label(t), ...cells(medianRound)]));
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    for (const server of servers) await server.process.stop();
    process.stdout.write(`\nLoad average after: ${load()}; ended ${new Date().toISOString()}\n`);
  }
}

// Exiting through process.exit runs the test bed's exit hook, which stops the servers.
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));
await main();
