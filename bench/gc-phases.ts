// Benchmark (issue 14): what each load phase leaves to the hasher's V8 heap.
// The hasher's burst p99 is set by mark-compacts; whether one falls in a
// burst depends on what the phases before it put in the old generation.
// This runs builds of the `ext-proc` command (--build label=path, repeatable;
// default: this tree's dist/) one after the other in alternating order, each
// a fresh process pinned to core 0 under V8's --trace-gc-nvp, h2load on
// core 1, through the bench's phases in the bench's order: warm-up,
// saturation (2 connections × 32 streams), closed loop with 1, 2, 3 streams,
// then open-loop bursts (4 connections, h2load --rps). Per phase: req/s,
// p50/p99/max, scavenges, bytes they promoted, mark-compacts and their
// pauses. A mark-compact with little promoted before it means the old
// generation grew by direct allocation, not by promotion.
//
//   node bench/gc-phases.ts [--build label=path ...] [--pairs 2] [--saturation 70000] [--closed 1,2,3] [--rate 10400]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PROCESS_METHOD_PATH } from '../ext-proc/protocol.ts';
import { freePort, startProcess, waitFor } from '../test/testbed/processes.ts';
import { builtCli } from '../test/testbed/webhook.ts';
import { CHAT_REQUEST_HEADERS, chatTurnTwoBody, h2load, requireH2load, writeExtProcRequest } from './h2load.ts';
import { alternatingRunsAsync, memoryMiB } from './stats.ts';
import { hasherEnv } from './manager-env.ts';

const { values: args } = parseArgs({
  options: {
    build: { type: 'string', multiple: true, default: [] },
    pairs: { type: 'string', default: '2' },
    saturation: { type: 'string', default: '70000' },
    closed: { type: 'string', default: '1,2,3' },
    rate: { type: 'string', default: '10400' },
  },
});

/** The collections among V8's --trace-gc-nvp lines. */
function collections(text: string): string {
  let scavenges = 0;
  let promoted = 0;
  let marks = 0;
  let markPause = 0;
  let longest = 0;
  for (const line of text.split('\n')) {
    const kind = / gc=(\w+) /.exec(line)?.[1];
    if (kind === undefined) continue;
    const pause = Number(/pause=([\d.]+)/.exec(line)?.[1] ?? 0);
    if (kind === 's') {
      scavenges++;
      promoted += Number(/ promoted=(\d+)/.exec(line)?.[1] ?? 0);
    } else if (kind === 'mc' || kind === 'mmc') {
      marks++;
      markPause += pause;
      longest = Math.max(longest, pause);
    }
  }
  return `${scavenges} scavenges promoting ${(promoted / 1e6).toFixed(1)} MB; ${marks} mark-compacts, ${markPause.toFixed(0)} ms in all, longest ${longest.toFixed(1)} ms`;
}

async function main(): Promise<void> {
  requireH2load();
  const builds = (args.build as string[]).map((spec) => {
    const at = spec.indexOf('=');
    if (at <= 0) throw new Error(`--build: ${spec} is not label=path-to-modelplane-affinity.js`);
    return { label: spec.slice(0, at), cli: spec.slice(at + 1) };
  });
  if (builds.length === 0) builds.push({ label: 'this tree', cli: builtCli() });
  execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'gc-phases-'));
  const body = chatTurnTwoBody();
  const bodyFile = writeExtProcRequest(join(dir, 'request.bin'), CHAT_REQUEST_HEADERS, body, true);
  const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
  process.stdout.write(`${new Date().toISOString()}; body ${body.length} bytes; load average ${load()}\n`);
  for (let pair = 0; pair < Number(args.pairs); pair++) {
    await alternatingRunsAsync(pair, builds, async ({ label, cli }) => {
      const [port, metricsPort] = [await freePort(), await freePort()];
      const gcLog = join(dir, `${label.replace(/\W/g, '_')}-${pair}.gc.log`);
      const command = ['taskset', '-c', '0', process.execPath, '--trace-gc-nvp', cli, 'ext-proc', '--host', '127.0.0.1', '--port', String(port), '--metrics-port', String(metricsPort), '--prefix-bytes', '1024'];
      // V8's lines go straight to a file: a pipe to this process, which h2load runs block, would fill and stall the hasher.
      const hasher = startProcess('sh', ['-c', 'exec "$@" > "$GC_LOG"', 'sh', ...command], join(dir, 'hasher.log'), { ...process.env, ...hasherEnv(), GC_LOG: gcLog });
      try {
        await waitFor('the hasher to serve /metrics', async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).ok, 30_000, () => hasher.tail());
        const url = `http://127.0.0.1:${port}${PROCESS_METHOD_PATH}`;
        const phase = (name: string, o: { requests: number; connections: number; streamsPerConnection: number; ratePerConnection?: number }) => {
          const at = statSync(gcLog).size;
          const r = h2load({ url, bodyFile, core: '1', logFile: join(dir, 'h2load.log'), ...o });
          const gc = collections(readFileSync(gcLog, 'utf8').slice(at));
          process.stdout.write(`${label}, pair ${pair + 1}, ${name}: ${r.perSecond.toFixed(0)} req/s, p50/p99/max ${r.p50Ms.toFixed(2)}/${r.p99Ms.toFixed(2)}/${r.maxMs.toFixed(1)} ms; ${gc}; RSS ${memoryMiB(hasher.child.pid as number, 'VmRSS').toFixed(0)} MiB\n`);
        };
        phase('warm-up', { requests: 5000, connections: 2, streamsPerConnection: 32 });
        phase('saturation', { requests: Number(args.saturation), connections: 2, streamsPerConnection: 32 });
        for (const streams of (args.closed as string).split(',').map(Number)) phase(`closed loop, ${streams} in flight`, { requests: 40_000, connections: 1, streamsPerConnection: streams });
        phase(`bursts at ${args.rate}/s`, { requests: 40_000, connections: 4, streamsPerConnection: 64, ratePerConnection: Math.round(Number(args.rate) / 4) });
      } finally {
        await hasher.stop();
      }
    });
  }
  process.stdout.write(`load average after: ${load()}\n`);
}

await main();
process.exit(0);
