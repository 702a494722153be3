// The load generator of bench/data-plane.ts's hop-cost runs: a closed loop
// of `concurrency` HTTP/1.1 keep-alive clients (node:http), a fixed number of
// requests, on a worker thread of its own, so that neither the inference
// clusters served from the bench's main thread nor its bookkeeping delay a
// request. Every request carries a body of exactly `bodyBytes` whose first
// user message starts with a per-request id, and an X-Session-ID of the same
// id, so every variant spreads its requests over the clusters alike.
//
// The worker warms its connections up, says so, waits for "go" (the main
// thread reads the processes' CPU time in between), sends the measured
// requests, and posts the result.
import http from 'node:http';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { CACHE_HEADER, SERVED_BY_HEADER } from '../test/testbed/inference-cluster.ts';
import { SESSION_HEADER } from '../test/testbed/fleet-bed.ts';

export interface LoadJob {
  url: string;
  bodyBytes: number;
  concurrency: number;
  requests: number;
  warmupRequests: number;
  /** Distinguishes the ids (and so the hashes) of one run's requests from another's. */
  runId: string;
}

export interface LoadResult {
  requests: number;
  failures: number;
  /** Answers that did not name a cluster (x-served-by): not from an inference cluster. */
  unserved: number;
  seconds: number;
  /** Latency of each measured request, ms, sorted. */
  latenciesMs: Float64Array;
}

const SYSTEM = 'You are a helpful assistant. Answer briefly and cite the documents you use.';
const FILLER = 'the cluster keeps the prefix of this conversation warm so the next turn starts fast ';

/** An OpenAI chat-completion body of exactly `size` bytes (ASCII) whose first user message begins with `id`. */
export function sizedChatBody(size: number, id: string): string {
  const envelope = (content: string) => JSON.stringify({ model: 'kimi-k2', messages: [{ role: 'system', content: SYSTEM }, { role: 'user', content }], stream: false, temperature: 0.7 });
  const room = size - envelope('').length;
  const head = `Request ${id}: `;
  if (room < head.length) throw new Error(`a ${size}-byte body has no room for the request id`);
  const body = envelope(head + FILLER.repeat(Math.ceil(room / FILLER.length)).slice(0, room - head.length));
  if (Buffer.byteLength(body) !== size) throw new Error(`built a ${Buffer.byteLength(body)}-byte body, wanted ${size}`);
  return body;
}

interface Answer {
  ok: boolean;
  served: boolean;
}

function post(agent: http.Agent, url: URL, body: string, id: string): Promise<Answer> {
  return new Promise((resolve) => {
    const req = http.request(
      url,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), [SESSION_HEADER]: id } },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ ok: res.statusCode === 200, served: typeof res.headers[SERVED_BY_HEADER] === 'string' && typeof res.headers[CACHE_HEADER] === 'string' }));
        res.on('error', () => resolve({ ok: false, served: false }));
      },
    );
    req.on('error', () => resolve({ ok: false, served: false }));
    req.end(body);
  });
}

async function closedLoop(job: LoadJob, agent: http.Agent, count: number, prefix: string, latencies?: number[]): Promise<{ failures: number; unserved: number }> {
  const url = new URL(job.url);
  let next = 0;
  let failures = 0;
  let unserved = 0;
  const client = async () => {
    while (next < count) {
      const id = `${job.runId}-${prefix}${next++}`;
      const body = sizedChatBody(job.bodyBytes, id);
      const started = performance.now();
      const answer = await post(agent, url, body, id);
      latencies?.push(performance.now() - started);
      if (!answer.ok) failures++;
      if (!answer.served) unserved++;
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, client));
  return { failures, unserved };
}

async function work(job: LoadJob): Promise<void> {
  const port = parentPort;
  if (port === null) throw new Error('data-plane-load: not a worker');
  const agent = new http.Agent({ keepAlive: true, maxSockets: job.concurrency });
  await closedLoop(job, agent, job.warmupRequests, 'warm-');
  const go = new Promise((resolve) => port.once('message', resolve));
  port.postMessage({ warmed: true });
  await go;
  const latencies: number[] = [];
  const started = performance.now();
  const { failures, unserved } = await closedLoop(job, agent, job.requests, '', latencies);
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  const latenciesMs = Float64Array.from(latencies).sort();
  const result: LoadResult = { requests: job.requests, failures, unserved, seconds, latenciesMs };
  port.postMessage(result, [latenciesMs.buffer]);
}

/**
 * Runs one job on a fresh worker thread. `onStart` runs once its connections
 * are warm, right before the measured requests; the promise resolves right
 * after the last one (callers read CPU time at both).
 */
export async function runLoad(job: LoadJob, onStart: () => void | Promise<void>): Promise<LoadResult> {
  const worker = new Worker(new URL(import.meta.url), { workerData: job });
  try {
    return await new Promise<LoadResult>((resolve, reject) => {
      worker.on('error', reject);
      worker.on('exit', (code) => reject(new Error(`load worker exited (${code}) before its result`)));
      worker.on('message', (message: { warmed: true } | LoadResult) => {
        if ('warmed' in message) {
          Promise.resolve(onStart()).then(() => worker.postMessage('go'), reject);
        } else resolve(message);
      });
    });
  } finally {
    await worker.terminate();
  }
}

if (!isMainThread && (workerData as LoadJob | undefined)?.url !== undefined) await work(workerData as LoadJob);
