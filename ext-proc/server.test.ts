// The hasher's gRPC server driven through Envoy's real protos by the Envoy-side
// harness: the sequences Envoy Gateway's ext_proc filter sends, with the
// header mutations applied the way Envoy applies them, checked against the
// independent BigInt XXH64 reference.
import { spawn } from 'node:child_process';
import http2 from 'node:http2';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { pino } from 'pino';
import {
  EnvoyStream,
  bodyMessage,
  connectExtProc,
  headerValues,
  headersMessage,
  playRequest,
  type ExtProcClient,
  type HeaderList,
} from './envoy-harness.ts';
import { frameMessage } from './grpc-wire.ts';
import { PROCESS_METHOD_PATH, processMethod } from './protocol.ts';
import { startExtProc, type ExtProcOptions, type ExtProcServer } from './server.ts';
import { referencePromptHash } from './xxh64-reference.ts';

const N = 1024;
const MARKER = 'SECRET-BODY-MARKER';

interface Running {
  server: ExtProcServer;
  client: ExtProcClient;
  address: string;
  logs: string[];
}
const running: Running[] = [];

async function start(options: Partial<ExtProcOptions> = {}): Promise<Running> {
  const logs: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) });
  const server = await startExtProc({ port: 0, host: '127.0.0.1', prefixBytes: N, metricsPort: 0, logger, drainTimeoutMs: 2000, ...options });
  const address = `127.0.0.1:${server.port}`;
  const run = { server, client: connectExtProc(address), address, logs };
  running.push(run);
  return run;
}

afterEach(async () => {
  for (const { client, server } of running.splice(0)) {
    client.close();
    await server.drain();
  }
});

function chatBody(content: string): Buffer {
  return Buffer.from(JSON.stringify({ model: 'kimi-k2', messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content }] }));
}

async function scrape(server: ExtProcServer): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
  return response.text();
}

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? Number.NaN : Number(line.slice(series.length + 1));
}

const base: HeaderList = [
  [':method', 'POST'],
  [':path', '/v1/chat/completions'],
  ['content-type', 'application/json'],
];
const long = chatBody(`${MARKER} ${'x'.repeat(5000)}`);
const utf8Split = Buffer.concat([Buffer.from('a'.repeat(N - 1)), Buffer.from('€ and more')]);
const binary = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 37) & 0xff));
const huge = Buffer.alloc(2 * 1024 * 1024, 'h');
huge.write(MARKER, 2 * 1024 * 1024 - 100);
const partial = Buffer.alloc(32768, 'p');
partial.write(MARKER);

describe('the prefix hasher, as Envoy Gateway drives it', () => {
  it.each([
    { name: 'a short body is hashed whole', headers: base, body: chatBody('hi'), hash: referencePromptHash(chatBody('hi'), N) },
    { name: 'a body of exactly N bytes is hashed whole', headers: base, body: long.subarray(0, N), hash: referencePromptHash(long.subarray(0, N), N) },
    { name: 'a long body is hashed on its first N bytes', headers: base, body: long, hash: referencePromptHash(long.subarray(0, N), N) },
    { name: 'a UTF-8 character split at byte N is cut as bytes', headers: base, body: utf8Split, hash: referencePromptHash(utf8Split.subarray(0, N), N) },
    { name: 'binary bytes are hashed as they are', headers: base, body: binary, hash: referencePromptHash(binary, N) },
    {
      name: 'spoofed x-prompt-hash headers in any letter case are replaced by the one true hash',
      headers: [...base, ['X-Prompt-Hash', 'aaaaaaaaaaaaaaaa'], ['x-prompt-hash', 'bbbb'], ['X-PROMPT-HASH', 'cccc']] as HeaderList,
      body: chatBody('hi'),
      hash: referencePromptHash(chatBody('hi'), N),
    },
    { name: 'a request without a body gets no hash, and a spoofed one is dropped', headers: [...base, ['X-Prompt-Hash', 'ffff']] as HeaderList, body: undefined, hash: null },
    { name: 'an empty body gets no hash, and a spoofed one is dropped', headers: [...base, ['x-PROMPT-hash', 'ffff']] as HeaderList, body: Buffer.alloc(0), hash: null },
    {
      name: 'a 32 KiB BufferedPartial first message (end_of_stream false) is hashed on its first N bytes',
      headers: base,
      body: partial,
      bodyEndOfStream: false,
      hash: referencePromptHash(partial.subarray(0, N), N),
    },
    {
      // Behind Envoy AI Gateway (a 50Mi connection buffer in its examples) the whole body comes in one message.
      name: 'a 2 MiB body in one message is hashed on its first N bytes; the bytes past the 128 KiB limit are dropped unread',
      headers: base,
      body: huge,
      hash: referencePromptHash(huge.subarray(0, N), N),
    },
  ])('$name', async ({ headers, body, bodyEndOfStream, hash }) => {
    const { client } = await start();
    const played = await playRequest(client, { headers, body, bodyEndOfStream });
    expect(played.status.code).toBe(grpc.status.OK);
    expect(headerValues(played.headers, 'x-prompt-hash')).toEqual(hash === null ? [] : [hash]);
    // Everything else reaches the router untouched.
    expect(played.headers.filter(([name]) => name !== 'x-prompt-hash')).toEqual(headers.filter(([name]) => name.toLowerCase() !== 'x-prompt-hash'));
  });

  it('answers 500 concurrent streams, each with its own hash', async () => {
    const { client, server } = await start();
    const bodies = Array.from({ length: 500 }, (_, i) => chatBody(`conversation ${i}`));
    const played = await Promise.all(bodies.map((body) => playRequest(client, { headers: base, body })));
    expect(played.map((p) => headerValues(p.headers, 'x-prompt-hash'))).toEqual(bodies.map((body) => [referencePromptHash(body, N)]));
    expect(played.every((p) => p.status.code === grpc.status.OK)).toBe(true);
    const metrics = await scrape(server);
    expect(metric(metrics, 'ext_proc_streams_total')).toBe(500);
    expect(metric(metrics, 'ext_proc_messages_total{outcome="hashed"}')).toBe(500);
    await expect.poll(async () => metric(await scrape(server), 'ext_proc_streams_open')).toBe(0);
  });

  it('keeps a connection on which Envoy resets a stream per request, 5,000 times in a row', async () => {
    const { server } = await start();
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    let goaway: number | undefined;
    session.on('goaway', (code: number) => (goaway = code));
    session.on('error', () => {});
    for (let i = 0; i < 5_000; i++) {
      const stream = session.request({ ':method': 'POST', ':path': PROCESS_METHOD_PATH, 'content-type': 'application/grpc', te: 'trailers' });
      stream.on('error', () => {});
      stream.close(http2.constants.NGHTTP2_CANCEL);
      if (i % 500 === 499) await new Promise((r) => setImmediate(r));
    }
    // Still the same connection: one more request (a bodyless one: headers with end_of_stream) is answered on it.
    const last = session.request({ ':method': 'POST', ':path': PROCESS_METHOD_PATH, 'content-type': 'application/grpc', te: 'trailers' });
    const answered = new Promise<number>((resolve) => {
      let bytes = 0;
      last.on('data', (chunk: Buffer) => (bytes += chunk.length));
      last.on('close', () => resolve(bytes));
      last.on('error', () => resolve(bytes));
    });
    last.end(frameMessage(processMethod().requestSerialize(headersMessage(base, true))));
    expect(await answered).toBeGreaterThan(5);
    expect({ goaway, closed: session.closed, destroyed: session.destroyed }).toEqual({ goaway: undefined, closed: false, destroyed: false });
    session.close();
  });

  it('takes a half-close followed by a reset, a reset mid-request and a half-close mid-request without errors or leaks', async () => {
    const { client, server, logs } = await start();
    const afterAnswer = new EnvoyStream(client);
    await afterAnswer.send(headersMessage(base, false));
    await afterAnswer.send(bodyMessage(chatBody('hi'), true));
    afterAnswer.halfClose();
    afterAnswer.reset();
    const midRequest = new EnvoyStream(client);
    await midRequest.send(headersMessage(base, false));
    midRequest.reset();
    const halfClosedMidRequest = new EnvoyStream(client);
    await halfClosedMidRequest.send(headersMessage(base, false));
    halfClosedMidRequest.halfClose();
    expect((await halfClosedMidRequest.status).code).toBe(grpc.status.OK);
    await Promise.all([afterAnswer.status, midRequest.status]);
    await expect.poll(async () => metric(await scrape(server), 'ext_proc_streams_open')).toBe(0);
    const played = await playRequest(client, { headers: base, body: chatBody('still here') });
    expect(headerValues(played.headers, 'x-prompt-hash')).toEqual([referencePromptHash(chatBody('still here'), N)]);
    expect(logs.filter((line) => JSON.parse(line).level >= 40)).toEqual([]);
  });

  it('logs a client reset at debug, after its headers and in the middle of a message, and counts neither as an error', async () => {
    const { server, logs } = await start();
    const method = processMethod();
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    session.on('error', () => {});
    const headers = frameMessage(method.requestSerialize(headersMessage(base, false)));
    const body = frameMessage(method.requestSerialize(bodyMessage(chatBody('cut short'), true)));
    for (const sent of [headers, Buffer.concat([headers, body.subarray(0, 12)])]) {
      const stream = session.request({ ':method': 'POST', ':path': PROCESS_METHOD_PATH, 'content-type': 'application/grpc', te: 'trailers' });
      stream.on('error', () => {});
      stream.write(sent);
      // The headers answer arrives: the server has read what was sent.
      await once(stream, 'data');
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await once(stream, 'close');
    }
    await expect.poll(async () => metric(await scrape(server), 'ext_proc_streams_open')).toBe(0);
    await expect.poll(() => logs.filter((line) => JSON.parse(line).msg === 'ext_proc stream reset by the client').length).toBe(2);
    const metrics = await scrape(server);
    expect(metric(metrics, 'ext_proc_stream_errors_total{reason="undecodable"}')).toBe(0);
    expect(logs.filter((line) => JSON.parse(line).level >= 40)).toEqual([]);
    session.close();
  });

  /** Opens `count` Process streams on a connection of their own, each sending the first `sent` bytes of a chat body of `bodyBytes`, and stopping there once its headers are answered. */
  async function stopInBodies(port: number, count: number, bodyBytes: number, sent: number): Promise<{ session: http2.ClientHttp2Session; streams: http2.ClientHttp2Stream[] }> {
    const method = processMethod();
    // node's client refuses to hold more than 10 MB of unsent data by default.
    const session = http2.connect(`http://127.0.0.1:${port}`, { maxSessionMemory: 100 });
    session.on('error', () => {});
    const headers = frameMessage(method.requestSerialize(headersMessage(base, false)));
    const body = frameMessage(method.requestSerialize(bodyMessage(chatBody('x'.repeat(bodyBytes)), true)));
    const streams = await Promise.all(
      Array.from({ length: count }, async () => {
        const stream = session.request({ ':method': 'POST', ':path': PROCESS_METHOD_PATH, 'content-type': 'application/grpc', te: 'trailers' });
        stream.on('error', () => {});
        stream.write(Buffer.concat([headers, body.subarray(0, sent)]));
        await once(stream, 'data');
        return stream;
      }),
    );
    return { session, streams };
  }

  it('counts the bytes of messages still arriving, and gives them back when their streams are reset', async () => {
    const { server } = await start();
    const { session, streams } = await stopInBodies(server.port, 20, 60_000, 40_000);
    // 20 bodies with 40 KB of 60 KB each come: at least that much is held.
    await expect.poll(async () => metric(await scrape(server), 'ext_proc_unfinished_message_bytes')).toBeGreaterThanOrEqual(20 * 40_000);
    for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
    await expect.poll(async () => metric(await scrape(server), 'ext_proc_streams_open')).toBe(0);
    expect(metric(await scrape(server), 'ext_proc_unfinished_message_bytes')).toBe(0);
    session.close();
  });

  it("keeps serving other connections when one connection's streams stop in the middle of their bodies, up to its share", async () => {
    const { server, client } = await start();
    // 70 KB of each 100 KB body: an 80 KiB buffer each, so 420 streams ask for more than 32 MiB.
    const { session, streams } = await stopInBodies(server.port, 420, 100_000, 70_000);
    await expect.poll(async () => metric(await scrape(server), 'ext_proc_stream_errors_total{reason="too-large"}')).toBeGreaterThan(0);
    expect(metric(await scrape(server), 'ext_proc_unfinished_message_bytes')).toBeLessThanOrEqual(32 * 1024 * 1024);
    // Another connection (the harness's grpc-js client): a 60 KB body over several DATA frames is hashed.
    const long = chatBody('y'.repeat(60_000));
    const played = await playRequest(client, { headers: base, body: long });
    expect(headerValues(played.headers, 'x-prompt-hash')).toEqual([referencePromptHash(long, N)]);
    for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
    await expect.poll(async () => metric(await scrape(server), 'ext_proc_unfinished_message_bytes')).toBe(0);
    session.close();
  });

  const method = processMethod();
  it.each([
    { name: 'bytes that are no protobuf', messages: [Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, ...Buffer.from(MARKER)])], code: grpc.status.INVALID_ARGUMENT, details: /^undecodable ProcessingRequest: / },
    { name: 'an empty ProcessingRequest', messages: [Buffer.alloc(0)], code: grpc.status.INVALID_ARGUMENT, details: /^ProcessingRequest has none of/ },
    { name: 'a body before the headers', messages: [method.requestSerialize(bodyMessage(Buffer.from(MARKER), true))], code: grpc.status.FAILED_PRECONDITION, details: /^out-of-order request_body: expected request_headers first$/ },
    {
      name: 'headers twice',
      messages: [method.requestSerialize(headersMessage(base, false)), method.requestSerialize(headersMessage(base, false))],
      code: grpc.status.FAILED_PRECONDITION,
      details: /^out-of-order request_headers/,
    },
    {
      name: 'a headers message over the 128 KiB limit',
      messages: [method.requestSerialize(headersMessage([...base, ['x-big', MARKER.repeat(12_000)]], false))],
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: /^ProcessingRequest of 21\d{4} bytes exceeds the 131072-byte limit and is not a request body$/,
    },
    {
      name: 'a 2 MiB body before the headers (its first bytes kept, the rest dropped)',
      messages: [method.requestSerialize(bodyMessage(Buffer.alloc(2 * 1024 * 1024, MARKER), true))],
      code: grpc.status.FAILED_PRECONDITION,
      details: /^out-of-order request_body: expected request_headers first$/,
    },
  ])('ends the stream of $name with a gRPC error, logs no body bytes, and keeps serving', async ({ messages, code, details }) => {
    const { address, client, logs } = await start();
    const raw = connectExtProc(address, { rawRequests: true });
    const stream = new EnvoyStream(raw);
    for (const message of messages) await stream.send(message);
    const status = await stream.status;
    raw.close();
    expect(status.code).toBe(code);
    expect(status.details).toMatch(details);
    const played = await playRequest(client, { headers: base, body: chatBody('next') });
    expect(headerValues(played.headers, 'x-prompt-hash')).toEqual([referencePromptHash(chatBody('next'), N)]);
    expect(logs.join('\n')).not.toContain(MARKER);
  });

  it('counts hashed, no-body and error outcomes and handling latency in Prometheus metrics', async () => {
    const { address, client, server } = await start();
    await playRequest(client, { headers: base, body: chatBody('a') });
    await playRequest(client, { headers: base });
    await playRequest(client, { headers: base, body: Buffer.alloc(0) });
    const raw = connectExtProc(address, { rawRequests: true });
    const stream = new EnvoyStream(raw);
    await stream.send(method.requestSerialize(bodyMessage(Buffer.from('x'), true)));
    await stream.status;
    raw.close();
    const text = await scrape(server);
    expect(metric(text, 'ext_proc_streams_total')).toBe(4);
    expect(metric(text, 'ext_proc_messages_total{outcome="hashed"}')).toBe(1);
    expect(metric(text, 'ext_proc_messages_total{outcome="no-body"}')).toBe(2);
    expect(metric(text, 'ext_proc_stream_errors_total{reason="out-of-order"}')).toBe(1);
    expect(metric(text, 'ext_proc_message_handling_seconds_count{message="request_body"}')).toBe(2);
    expect(text).toContain('process_resident_memory_bytes');
  });
});

describe('health and draining', () => {
  const healthPackage = grpc.loadPackageDefinition(protoLoader.loadSync(healthProtoPath, { enums: String })) as unknown as {
    grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
  };
  function healthClient(address: string) {
    return new healthPackage.grpc.health.v1.Health(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      Check(request: { service: string }, callback: (error: grpc.ServiceError | null, response?: { status: string }) => void): void;
      Watch(request: { service: string }): grpc.ClientReadableStream<{ status: string }>;
    };
  }

  it('reports SERVING, turns NOT_SERVING on drain, answers the open stream, and refuses new ones', async () => {
    const { address, client, server } = await start();
    const health = healthClient(address);
    const check = (service: string) =>
      new Promise<string>((resolve) => health.Check({ service }, (error, response) => resolve(error ? grpc.status[error.code] : (response?.status ?? 'none'))));
    expect(await check('')).toBe('SERVING');
    expect(await check('envoy.service.ext_proc.v3.ExternalProcessor')).toBe('SERVING');
    expect(await check('some.other.Service')).toBe('NOT_FOUND');
    const watch = health.Watch({ service: '' });
    const seen: string[] = [];
    watch.on('data', (message: { status: string }) => seen.push(message.status));
    watch.on('error', () => {});
    await expect.poll(() => seen).toEqual(['SERVING']);

    const open = new EnvoyStream(client);
    await open.send(headersMessage(base, false));
    const drained = server.drain();
    await expect.poll(() => seen).toEqual(['SERVING', 'NOT_SERVING']);
    // The stream that was waiting for its body still gets its hash, then is closed cleanly.
    const answer = await open.send(bodyMessage(chatBody('during drain'), true));
    expect(answer?.request_body?.response?.header_mutation?.set_headers?.[0]?.header?.raw_value?.toString()).toBe(referencePromptHash(chatBody('during drain'), N));
    expect((await open.status).code).toBe(grpc.status.OK);
    watch.cancel();
    health.close();
    await drained;
    const refused = new EnvoyStream(client);
    expect(await refused.send(headersMessage(base, true))).toBeUndefined();
    expect((await refused.status).code).toBe(grpc.status.UNAVAILABLE);
  });

  it('answers a method it does not serve with UNIMPLEMENTED', async () => {
    const { address } = await start();
    const Client = grpc.makeGenericClientConstructor(
      { Other: { ...processMethod(), path: '/envoy.service.ext_proc.v3.ExternalProcessor/Other' } },
      'ExternalProcessor',
    );
    const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & { Other: () => grpc.ClientDuplexStream<unknown, unknown> };
    const call = client.Other();
    const status = await new Promise<grpc.StatusObject>((resolve) => {
      call.on('status', resolve);
      call.on('error', () => {});
      call.on('data', () => {});
    });
    client.close();
    expect(status).toMatchObject({ code: grpc.status.UNIMPLEMENTED, details: 'unknown method /envoy.service.ext_proc.v3.ExternalProcessor/Other' });
  });

  it('answers a health Check that half-closes without its request with INVALID_ARGUMENT, not silence', async () => {
    const { server } = await start();
    const session = http2.connect(`http://127.0.0.1:${server.port}`);
    try {
      const stream = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' }, { endStream: true });
      stream.resume();
      const [trailers] = (await once(stream, 'trailers')) as [http2.IncomingHttpHeaders];
      expect(trailers['grpc-status']).toBe(String(grpc.status.INVALID_ARGUMENT));
      expect(decodeURIComponent(String(trailers['grpc-message']))).toBe('the stream ended before its HealthCheckRequest');
    } finally {
      session.close();
    }
  });

  it('closes a stream still waiting for its body cleanly once the drain timeout passes', async () => {
    const { client, server } = await start({ drainTimeoutMs: 200 });
    const stuck = new EnvoyStream(client);
    await stuck.send(headersMessage(base, false));
    const began = Date.now();
    await server.drain();
    expect((await stuck.status).code).toBe(grpc.status.OK);
    expect(Date.now() - began).toBeGreaterThanOrEqual(190);
  });
});

describe('the ext-proc command under SIGTERM', () => {
  it('answers every stream it started while draining under load, then exits 0', async () => {
    // The real command line, as the generated Deployment runs it.
    const child = spawn(process.execPath, ['bin/modelplane-affinity.ts', 'ext-proc', '--port', '0', '--metrics-port', '0', '--host', '127.0.0.1', '--prefix-bytes', String(N), '--prefix-key', 'Body'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout });
    const logLines: string[] = [];
    let port = 0;
    for await (const line of lines) {
      logLines.push(line);
      const parsed = JSON.parse(line) as { msg: string; port?: number };
      if (parsed.msg === 'ext_proc prefix hasher serving' && parsed.port !== undefined) {
        port = parsed.port;
        break;
      }
    }
    lines.on('line', (line) => logLines.push(line));
    const client = connectExtProc(`127.0.0.1:${port}`);
    const exited = once(child, 'exit');

    // 50 workers loop over requests whose body comes 20 ms after the headers
    // answer, so the signal finds streams in every phase. Bounded: at most
    // 400 requests each, and the loop stops when the process has exited.
    let stop = false;
    let signalled = false;
    // Streams between their headers answer and their body right now.
    let inGap = 0;
    const results = { answered: 0, answeredAcrossSignal: 0, refused: 0, broken: [] as string[] };
    async function worker(id: number): Promise<void> {
      for (let i = 0; i < 400 && !stop; i++) {
        const body = chatBody(`worker ${id} request ${i}`);
        const stream = new EnvoyStream(client);
        const headersAnswer = await stream.send(headersMessage(base, false));
        if (headersAnswer === undefined) {
          const status = await stream.status;
          if (status.code === grpc.status.UNAVAILABLE) results.refused++;
          else results.broken.push(`headers got status ${status.code} ${status.details}`);
          continue;
        }
        const headersBeforeSignal = !signalled;
        inGap++;
        await new Promise((resolve) => setTimeout(resolve, 20));
        inGap--;
        const bodyAnswer = await stream.send(bodyMessage(body, true));
        const hash = bodyAnswer?.request_body?.response?.header_mutation?.set_headers?.[0]?.header?.raw_value?.toString();
        stream.halfClose();
        const status = await stream.status;
        if (hash === referencePromptHash(body, N) && status.code === grpc.status.OK) {
          results.answered++;
          if (headersBeforeSignal && signalled) results.answeredAcrossSignal++;
        } else results.broken.push(`body answer ${hash ?? 'missing'}, status ${status.code} ${status.details}`);
      }
    }
    const workers = Array.from({ length: 50 }, (_, id) => worker(id));
    // Signal once the server is warm and busy, at a moment when streams wait
    // between headers and body (the workers tend to move in waves; a signal
    // between two waves would catch none). Bounded wait.
    for (let waited = 0; (results.answered < 100 || inGap < 10) && waited < 10_000; waited += 1) await new Promise((resolve) => setTimeout(resolve, 1));
    child.kill('SIGTERM');
    signalled = true;
    const signalledAt = Date.now();
    const [code] = await exited;
    const drainMs = Date.now() - signalledAt;
    stop = true;
    await Promise.all(workers);
    client.close();

    expect(results.broken).toEqual([]);
    expect(results.answered).toBeGreaterThan(100);
    // Draining is quick when every stream's request completes (the timeout is 10 s).
    expect(drainMs).toBeLessThan(5000);
    // Streams were caught between their headers and their body by the signal, and were answered.
    expect(results.answeredAcrossSignal).toBeGreaterThan(0);
    expect(code).toBe(0);
    const messages = logLines.map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(messages).toContain('drained');
  }, 30_000);
});
