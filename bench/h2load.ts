// h2load (nghttp2's HTTP/2 load generator, Debian package nghttp2-client) as
// a gRPC load generator for the ext_proc benchmark. A gRPC call is an HTTP/2
// POST whose body is length-prefixed messages, so one request body holding
// the framed headers message and the framed body message is one ext_proc
// stream, as ghz sends it (pipelined: the body does not wait for the headers
// answer). h2load is C on one event loop: it keeps up with both servers on one
// core and adds little to the latency it measures, where the Node load
// generator's own scheduling lag hid anything under ~15 ms at p99. It checks
// the HTTP status only; the gRPC status is in trailers, so callers verify
// answers another way.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { bodyMessage, headersMessage, type HeaderList } from '../ext-proc/envoy-harness.ts';
import { frameMessage } from '../ext-proc/grpc-wire.ts';
import { processMethod } from '../ext-proc/protocol.ts';
import { shape } from './client-shapes.ts';
import { percentile } from './stats.ts';

export interface H2loadRun {
  requests: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

/** Fails with what to install when h2load is missing. */
export function requireH2load(): void {
  const probe = spawnSync('h2load', ['--version'], { encoding: 'utf8' });
  if (probe.status !== 0) throw new Error('h2load not found: install it with `apt-get install nghttp2-client` (Debian/Ubuntu)');
}

/**
 * Writes one ext_proc stream as h2load's request body (`-d`): the framed
 * request-headers message, then the framed request-body message.
 */
/** Turn 2 of a chat as the OpenAI SDK sends it (the history resent), about 4 KiB: the body of bench/hasher-idle.ts and bench/gc-phases.ts. */
export function chatTurnTwoBody(): Buffer {
  const text = (words: number, salt: number) => Array.from({ length: words }, (_, i) => `word${(i * 7 + salt) % 97}`).join(' ');
  const dialogue = { system: text(100, 1), turns: [{ user: text(70, 2), assistant: text(170, 3) }, { user: text(200, 4), assistant: '' }] };
  return Buffer.from(shape('chat: model first (OpenAI SDK)').body(dialogue, 1));
}

/** The request headers of a chat completion as Envoy hands them to the hasher, in every bench's ext_proc requests. */
export const CHAT_REQUEST_HEADERS: HeaderList = [
  [':authority', 'gateway.example.com'],
  [':method', 'POST'],
  [':path', '/v1/chat/completions'],
  [':scheme', 'https'],
  ['content-type', 'application/json'],
  ['authorization', 'Bearer sk-redacted'],
  ['user-agent', 'OpenAI/Python 1.99.0'],
  ['x-request-id', '2f1c7e4a-6b1d-4d0e-9a53-3b9b0c6f1e22'],
];

export function writeExtProcRequest(file: string, headers: HeaderList, body: Uint8Array, endOfStream: boolean): string {
  const { requestSerialize } = processMethod();
  writeFileSync(file, Buffer.concat([frameMessage(requestSerialize(headersMessage(headers, false))), frameMessage(requestSerialize(bodyMessage(body, endOfStream)))]));
  return file;
}

export interface H2loadOptions {
  url: string;
  bodyFile: string;
  requests: number;
  connections: number;
  streamsPerConnection: number;
  /** Open loop: requests per second per connection. Closed loop when absent. */
  ratePerConnection?: number;
  /** CPU the generator is pinned to. */
  core: string;
  logFile: string;
}

export function h2load(o: H2loadOptions): H2loadRun {
  rmSync(o.logFile, { force: true });
  const args = [
    '-c', o.core, 'h2load', o.url,
    '-d', o.bodyFile, '-H', 'content-type: application/grpc', '-H', 'te: trailers',
    '-n', String(o.requests), '-c', String(o.connections), '-m', String(o.streamsPerConnection),
    '--log-file', o.logFile,
    ...(o.ratePerConnection === undefined ? [] : ['--rps', String(o.ratePerConnection)]),
  ];
  const out = execFileSync('taskset', args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  const succeeded = Number(/(\d+) succeeded/.exec(out)?.[1] ?? Number.NaN);
  const twoXx = Number(/status codes: (\d+) 2xx/.exec(out)?.[1] ?? Number.NaN);
  if (succeeded !== o.requests || twoXx !== o.requests) throw new Error(`h2load: ${succeeded} of ${o.requests} requests succeeded (${twoXx} 2xx):\n${out}`);
  // Log columns: start (µs since epoch), HTTP status, µs until the end of the response.
  const durations = readFileSync(o.logFile, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => Number(line.split('\t')[2]) / 1000)
    .sort((a, b) => a - b);
  return {
    requests: o.requests,
    perSecond: Number(/finished in [\d.]+m?s, ([\d.]+) req\/s/.exec(out)?.[1] ?? Number.NaN),
    p50Ms: percentile(durations, 50),
    p99Ms: percentile(durations, 99),
    p999Ms: percentile(durations, 99.9),
    maxMs: durations[durations.length - 1] ?? Number.NaN,
  };
}
