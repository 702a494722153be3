// Reliability of the prefix hasher under load and bad input (issue 15), on
// the real command (`modelplane-affinity ext-proc`, as the Deployment runs
// it) driven the way Envoy drives it: many streams on one HTTP/2 connection,
// headers then one BufferedPartial body message each. Figures are printed as
// one `[reliability]` JSON line per scenario (bench/RELIABILITY.md); the
// assertions are about correctness and bounds, never about time.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EnvoyStream, type ExtProcClient, bodyMessage, connectExtProc, headersMessage } from '../ext-proc/envoy-harness.ts';
import { loadXxh64, promptHash } from '../ext-proc/handlers.ts';
import { memoryMiB } from '../bench/stats.ts';
import { EXT_PROC_ENV } from '../src/render.ts';
import { type ManagedProcess, freePort, startProcess, waitFor } from './testbed/processes.ts';
import { testbed } from './testbed/testbed.ts';
import { CLI } from './testbed/webhook.ts';

const PREFIX_BYTES = 1024;
const MARKER = 'SECRET-MARKER-5f0c1e';

let hasher: ManagedProcess | undefined;
let client: ExtProcClient | undefined;

afterEach(async () => {
  client?.close();
  await hasher?.stop();
  hasher = undefined;
});

async function startHasher(name: string, env: NodeJS.ProcessEnv = {}): Promise<{ address: string; logFile: string; pid: number; metricsPort: number }> {
  const port = await freePort();
  const metricsPort = await freePort();
  const logFile = join(testbed().dir, `${name}.log`);
  // The environment the hasher Deployment sets (young-generation cap, malloc thresholds), so RSS is the pod's.
  const deploymentEnv = Object.fromEntries(EXT_PROC_ENV.map((e) => [e.name, e.value]));
  hasher = startProcess(process.execPath, [CLI, 'ext-proc', '--port', String(port), '--prefix-bytes', String(PREFIX_BYTES), '--metrics-port', String(metricsPort), '--host', '127.0.0.1'], logFile, {
    ...process.env,
    ...deploymentEnv,
    ...env,
  });
  const running = hasher;
  const address = `127.0.0.1:${port}`;
  client = connectExtProc(address);
  await waitFor('the hasher to answer', async () => (await oneRequest(chatBody(0))).ok, 30_000, () => running.tail());
  return { address, logFile, pid: running.child.pid ?? 0, metricsPort };
}

function chatBody(i: number, extra = ''): Buffer {
  return Buffer.from(
    JSON.stringify({
      model: 'kimi-k2',
      messages: [
        { role: 'system', content: 'You are a helpful assistant.' },
        { role: 'user', content: `Conversation ${i}: ${extra}${'tell me about caches '.repeat(180)}` },
      ],
      max_tokens: 64,
    }),
  );
}

let hash64: Awaited<ReturnType<typeof loadXxh64>> | undefined;

/** One request as Envoy sends it; ok when the stream answered both messages and the hash is the one the body gives. */
async function oneRequest(body: Buffer): Promise<{ ok: boolean; ms: number }> {
  hash64 ??= await loadXxh64();
  const started = performance.now();
  const stream = new EnvoyStream(client as ExtProcClient);
  const headers = await stream.send(headersMessage([[':method', 'POST'], [':path', '/v1/chat/completions']], false));
  const answer = await stream.send(bodyMessage(body, true));
  stream.halfClose();
  const status = await stream.status;
  const got = answer?.request_body?.response?.header_mutation?.set_headers?.[0]?.header?.raw_value;
  const expected = promptHash(body, PREFIX_BYTES, hash64, 'Conversation');
  return { ok: headers !== undefined && status.code === 0 && got !== undefined && Buffer.from(got).toString() === expected, ms: performance.now() - started };
}

/** `total` requests, `concurrency` at a time; the number answered correctly and the latency percentiles. */
async function load(total: number, concurrency: number, pid: number): Promise<{ correct: number; p50: number; p99: number; maxRssMiB: number }> {
  let next = 0;
  let correct = 0;
  const times: number[] = [];
  let maxRss = memoryMiB(pid, 'VmRSS');
  const sampler = setInterval(() => (maxRss = Math.max(maxRss, memoryMiB(pid, 'VmRSS'))), 50);
  const worker = async () => {
    while (next < total) {
      const i = next++;
      const r = await oneRequest(chatBody(i));
      if (r.ok) correct++;
      times.push(r.ms);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  clearInterval(sampler);
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(times.length * q))] ?? 0;
  return { correct, p50: at(0.5), p99: at(0.99), maxRssMiB: Math.round(maxRss) };
}

describe('the hasher under load and bad input', () => {
  it('answers 10,000 streams at concurrency 1,000 correctly, with RSS inside the 256Mi limit', async () => {
    const { pid } = await startHasher('hasher-10k');
    const idleMiB = Math.round(memoryMiB(pid, 'VmRSS'));
    const result = await load(10_000, 1_000, pid);
    process.stderr.write(`[reliability] ${JSON.stringify({ scenario: 'hasher 10,000 streams at concurrency 1,000', idleRssMiB: idleMiB, ...result })}\n`);
    expect(result.correct).toBe(10_000);
    expect(result.maxRssMiB).toBeLessThan(256);
  }, 180_000);

  it('serves the others while 1,000 streams are opened and never written', async () => {
    const { pid, metricsPort } = await startHasher('hasher-idle');
    const without = await load(3_000, 50, pid);
    const idle = Array.from({ length: 1_000 }, () => new EnvoyStream(client as ExtProcClient));
    // Each idle stream's HEADERS reached the server: its open-streams gauge counts them.
    await waitFor('1,000 idle streams open on the hasher', async () => (await openStreams(metricsPort)) >= 1_000, 30_000);
    const withIdle = await load(3_000, 50, pid);
    const stillOpen = await openStreams(metricsPort);
    for (const stream of idle) stream.reset();
    process.stderr.write(
      `[reliability] ${JSON.stringify({ scenario: 'hasher with 1,000 idle streams', withoutIdle: without, withIdle, p99Ratio: Number((withIdle.p99 / without.p99).toFixed(2)), idleStillOpen: stillOpen })}\n`,
    );
    expect(without.correct).toBe(3_000);
    expect(withIdle.correct).toBe(3_000);
    // The idle streams were neither closed nor answered: the server holds them and serves the rest.
    expect(stillOpen).toBeGreaterThanOrEqual(1_000);
  }, 180_000);

  it('never logs body bytes, at any level, whatever the body', async () => {
    const { address, logFile } = await startHasher('hasher-marker', { LOG_LEVEL: 'trace' });
    const marked = chatBody(1, MARKER);
    for (let i = 0; i < 50; i++) expect((await oneRequest(chatBody(i, MARKER))).ok).toBe(true);
    // Bodies that end streams with errors: garbage protobuf, out of order, too large, cut mid-message.
    const raw = connectExtProc(address, { rawRequests: true });
    const garbage = Buffer.concat([Buffer.from([0x12, 0xff, 0xff, 0xff, 0x0f]), marked]);
    for (const bytes of [garbage, Buffer.from(`\n\u0000${MARKER}`), marked]) {
      const stream = new EnvoyStream(raw as ExtProcClient);
      await stream.send(bytes);
      stream.halfClose();
      await stream.status;
    }
    const outOfOrder = new EnvoyStream(client as ExtProcClient);
    await outOfOrder.send(bodyMessage(marked, true));
    await outOfOrder.status;
    const tooLarge = new EnvoyStream(client as ExtProcClient);
    await tooLarge.send(bodyMessage(Buffer.concat([marked, Buffer.alloc(200 * 1024, MARKER)]), true));
    await tooLarge.status;
    // A stream the client resets after its headers (an abandoned HTTP request) is logged at debug.
    const abandoned = new EnvoyStream(client as ExtProcClient);
    await abandoned.send(headersMessage([[':path', `/${MARKER}`]], false));
    abandoned.reset();
    await abandoned.status;
    await new Promise((r) => setTimeout(r, 200));
    raw.close();
    await hasher?.stop();
    const log = readFileSync(logFile, 'utf8');
    const levels = new Set(log.split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { level: number }).level));
    process.stderr.write(`[reliability] ${JSON.stringify({ scenario: 'hasher logs with a marker in every body', logLines: log.split('\n').filter(Boolean).length, levels: [...levels].sort() })}\n`);
    // The log was written (start-up at info, each failed stream at warn; LOG_LEVEL=trace enables every level)...
    expect([...levels]).toEqual(expect.arrayContaining([30, 40]));
    // ...and holds no byte of any body.
    expect(log).not.toContain(MARKER);
    expect(log).not.toContain('tell me about caches');
  }, 120_000);
});

/** The hasher's ext_proc_streams_open gauge, from its metrics port. */
async function openStreams(metricsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const match = /^ext_proc_streams_open (\d+)/m.exec(text);
  return match ? Number(match[1]) : 0;
}
