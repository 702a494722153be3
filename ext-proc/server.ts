// The prefix hasher's gRPC server: the stream loop (receive, hand the message
// to handlers.ts, send the answer), grpc.health.v1.Health, metrics, and
// draining on SIGTERM. Plaintext HTTP/2 (Envoy Gateway dials ext_proc
// backends with h2c), framed by grpc-wire.ts on node:http2 directly: a
// stream per HTTP request makes per-stream overhead the cost that counts,
// and a general gRPC server library spent twice the CPU per request on it
// (bench/RESULTS.md).
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { GRPC_CONTENT_TYPE, GrpcStatus, MessageReader, fixedLengthValueFrames, frameMessage, statusName, statusTrailers } from './grpc-wire.ts';
import { DEFAULT_MAX_MESSAGE_BYTES, HEADERS_ANSWER, HEADERS_ANSWER_CLEARING_ROUTE, PROMPT_HASH_LENGTH, decodeRequest, handleMessage, hashedBodyAnswer, loadXxh64, type Answer, type ErrorReason, type HandlerConfig, type Phase } from './handlers.ts';
import type { PrefixKey } from '../src/model-service.ts';
import { createMetrics, serveMetrics, type ExtProcMetrics } from './metrics.ts';
import { EXT_PROC_SERVICE, HEALTH_SERVICE, PROCESS_METHOD_PATH, healthMethods, processMethod, type ServingStatus } from './protocol.ts';

export interface ExtProcOptions {
  port: number;
  prefixBytes: number;
  /** What the key is taken from (SPEC §4). Body when absent; the ext-proc command defaults to Conversation. */
  prefixKey?: PrefixKey | undefined;
  /** Address to listen on; default 0.0.0.0. */
  host?: string | undefined;
  /** Port of the Prometheus /metrics endpoint; none is served when absent. */
  metricsPort?: number | undefined;
  logger?: Logger | undefined;
  /** How long a drain waits for streams that still owe Envoy an answer; default 10 s. */
  drainTimeoutMs?: number | undefined;
  /** Largest ProcessingRequest accepted; default DEFAULT_MAX_MESSAGE_BYTES. */
  maxMessageBytes?: number | undefined;
}

export interface ExtProcServer {
  port: number;
  metricsPort: number | undefined;
  metrics: ExtProcMetrics;
  /** Stops taking streams, lets open ones finish, closes. Idempotent. */
  drain(): Promise<void>;
}

interface Status {
  code: GrpcStatus;
  details: string;
}

/** One gRPC call on an HTTP/2 stream: response headers at once, trailers when it ends. */
class Call {
  readonly stream: http2.ServerHttp2Stream;
  /** Our status has been handed to HTTP/2. */
  ended = false;
  private status: Status = { code: GrpcStatus.OK, details: '' };

  constructor(stream: http2.ServerHttp2Stream) {
    this.stream = stream;
    stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE }, { waitForTrailers: true });
    stream.once('wantTrailers', () => {
      stream.sendTrailers(statusTrailers(this.status.code, this.status.details));
      // A client that has not half-closed is told with RST_STREAM(NO_ERROR)
      // to stop sending; the answer it got is complete. One that has (the
      // usual end) needs nothing more: the trailers close the stream, and a
      // reset would cost a frame and 17-39% of the CPU per stream (bench/RESULTS.md).
      // Whether it has is known now for the usual end, so only the others
      // pay for a check on the next turn of the loop.
      if (!stream.readableEnded) {
        setImmediate(() => {
          if (!stream.closed && !stream.readableEnded) stream.close(http2.constants.NGHTTP2_NO_ERROR);
        });
      }
    });
  }

  send(payload: Uint8Array): void {
    this.sendFramed(frameMessage(payload));
  }

  /** A message already framed by frameMessage (and never changed afterwards: it may be shared). */
  sendFramed(frame: Buffer): void {
    if (!this.ended) this.stream.write(frame);
  }

  end(status: Status = { code: GrpcStatus.OK, details: '' }): void {
    if (this.ended) return;
    this.ended = true;
    this.status = status;
    if (this.stream.destroyed) return;
    this.stream.end();
  }
}

/** A call that fails before any message: a trailers-only response. */
function refuse(stream: http2.ServerHttp2Stream, code: GrpcStatus, details: string): void {
  stream.respond({ ':status': 200, 'content-type': GRPC_CONTENT_TYPE, ...statusTrailers(code, details) }, { endStream: true });
}

interface LiveStream {
  call: Call;
  phase: Phase;
}

export async function startExtProc(options: ExtProcOptions): Promise<ExtProcServer> {
  const host = options.host ?? '0.0.0.0';
  const log = options.logger ?? pino({ name: 'modelplane-affinity', base: { component: 'ext-proc' } });
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  const config: HandlerConfig = { prefixBytes: options.prefixBytes, prefixKey: options.prefixKey ?? 'Body', hash64: await loadXxh64() };
  const live = new Set<LiveStream>();
  const metrics = createMetrics(() => live.size);
  const method = processMethod();
  const health = healthMethods();
  // Every stream gets the same headers answer: encode it once. Hashed-body
  // answers differ only in the hash: encode them once, write the hash in.
  const headersAnswerFrame = frameMessage(method.responseSerialize(HEADERS_ANSWER));
  const headersClearingFrame = frameMessage(method.responseSerialize(HEADERS_ANSWER_CLEARING_ROUTE));
  const hashedAnswerFrame = fixedLengthValueFrames((hash) => method.responseSerialize(hashedBodyAnswer(hash)), PROMPT_HASH_LENGTH);
  const answerFrame = (answer: Answer): Buffer =>
    answer.response === HEADERS_ANSWER
      ? headersAnswerFrame
      : answer.response === HEADERS_ANSWER_CLEARING_ROUTE
        ? headersClearingFrame
        : answer.promptHash !== undefined
        ? hashedAnswerFrame(answer.promptHash)
        : frameMessage(method.responseSerialize(answer.response));
  const sessions = new Set<http2.ServerHttp2Session>();
  const serving = new Map<string, ServingStatus>([
    ['', 'SERVING'],
    [EXT_PROC_SERVICE, 'SERVING'],
  ]);
  const watchers = new Set<{ service: string; call: Call }>();
  let draining = false;

  function serveProcess(stream: http2.ServerHttp2Stream): void {
    const call = new Call(stream);
    const entry: LiveStream = { call, phase: 'awaiting-headers' };
    const reader = new MessageReader(maxMessageBytes);
    const peer = `${stream.session?.socket?.remoteAddress ?? 'unknown'}:${stream.session?.socket?.remotePort ?? ''}`;
    live.add(entry);
    metrics.streamStarted();

    const fail = (reason: ErrorReason, code: GrpcStatus, message: string): void => {
      metrics.errors.inc({ reason });
      // message never contains body bytes (see handlers.ts and grpc-wire.ts).
      log.warn({ peer, reason, code: statusName(code), error: message }, 'ending ext_proc stream with an error');
      call.end({ code, details: message });
    };

    stream.on('data', (chunk: Buffer) => {
      if (call.ended) return;
      const messages = reader.push(chunk);
      if (!Array.isArray(messages)) {
        fail(messages.code === GrpcStatus.RESOURCE_EXHAUSTED ? 'too-large' : 'undecodable', messages.code, messages.message);
        return;
      }
      for (const bytes of messages) {
        const started = performance.now();
        const decoded = decodeRequest(bytes, method.requestDeserialize);
        const result = decoded.ok ? handleMessage(entry.phase, decoded.request, config) : decoded;
        if (!result.ok) {
          fail(result.reason, result.code, result.message);
          return;
        }
        entry.phase = result.phase;
        call.sendFramed(answerFrame(result));
        metrics.answered(result.outcome, decoded.ok ? (decoded.request.request ?? 'none') : 'none', (performance.now() - started) / 1000);
        if (draining && isIdle(entry.phase)) call.end();
      }
    });
    // Envoy half-closed: nothing more will come, so close our side cleanly.
    stream.on('end', () => {
      if (call.ended) return;
      if (reader.pending) fail('undecodable', GrpcStatus.INTERNAL, 'the stream ended inside a message');
      else call.end();
    });
    // A reset is routine (the HTTP request ended), so it is not an error.
    stream.on('close', () => {
      if (!call.ended) log.debug({ peer, phase: entry.phase }, 'ext_proc stream reset by the client');
      call.ended = true;
      live.delete(entry);
    });
    stream.on('error', (error: Error) => log.debug({ peer, error: error.message }, 'ext_proc stream error'));
  }

  /** grpc.health.v1.Health: Check answers once; Watch answers now and on every change. */
  function serveHealth(stream: http2.ServerHttp2Stream, watch: boolean): void {
    const call = new Call(stream);
    const reader = new MessageReader(1024);
    const m = watch ? health.Watch : health.Check;
    stream.on('data', (chunk: Buffer) => {
      const messages = reader.push(chunk);
      if (!Array.isArray(messages)) return call.end({ code: messages.code, details: messages.message });
      const first = messages[0];
      if (first === undefined || call.ended) return;
      let service: string;
      try {
        service = m.requestDeserialize(first).service ?? '';
      } catch (error) {
        return call.end({ code: GrpcStatus.INVALID_ARGUMENT, details: `undecodable HealthCheckRequest: ${(error as Error).message}` });
      }
      const status = serving.get(service);
      if (!watch) {
        if (status === undefined) return call.end({ code: GrpcStatus.NOT_FOUND, details: `unknown service ${service}` });
        call.send(m.responseSerialize({ status }));
        return call.end();
      }
      call.send(m.responseSerialize({ status: status ?? 'SERVICE_UNKNOWN' }));
      const watcher = { service, call };
      watchers.add(watcher);
      stream.on('close', () => watchers.delete(watcher));
    });
    stream.on('error', () => {});
  }

  function setServing(status: ServingStatus): void {
    for (const service of serving.keys()) serving.set(service, status);
    const { Watch } = health;
    for (const watcher of watchers) watcher.call.send(Watch.responseSerialize({ status: serving.get(watcher.service) ?? 'SERVICE_UNKNOWN' }));
  }

  const server = http2.createServer({
    // The stream window holds one whole message, so Envoy sends a 32 KiB
    // body without waiting for a WINDOW_UPDATE.
    settings: { initialWindowSize: maxMessageBytes + 5 },
    // Node refuses new streams (ENHANCE_YOUR_CALM) once a session buffers
    // 10 MB, a few hundred bodies in flight; maxMessageBytes already bounds
    // what one stream may hold.
    maxSessionMemory: Number.MAX_SAFE_INTEGER,
  });
  server.on('session', (session) => {
    sessions.add(session);
    // A connection window for many concurrent bodies (1,000 × 16 KiB), so one
    // connection from Envoy is not throttled to 64 KiB in flight.
    session.setLocalWindowSize(16 * 1024 * 1024);
    session.on('close', () => sessions.delete(session));
    session.on('error', (error) => log.debug({ error: error.message }, 'HTTP/2 session error'));
  });
  server.on('stream', (stream, headers) => {
    const path = headers[':path'];
    if (headers[':method'] !== 'POST' || !String(headers['content-type'] ?? '').startsWith(GRPC_CONTENT_TYPE)) {
      stream.respond({ ':status': 415 }, { endStream: true });
    } else if (path === PROCESS_METHOD_PATH) serveProcess(stream);
    else if (path === `/${HEALTH_SERVICE}/Check`) serveHealth(stream, false);
    else if (path === `/${HEALTH_SERVICE}/Watch`) serveHealth(stream, true);
    else refuse(stream, GrpcStatus.UNIMPLEMENTED, `unknown method ${String(path)}`);
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
  let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;
  if (options.metricsPort !== undefined) {
    try {
      metricsServer = await serveMetrics(metrics.registry, options.metricsPort, host);
    } catch (error) {
      server.close();
      throw error;
    }
  }
  log.info({ port, metricsPort: metricsServer?.port, prefixBytes: options.prefixBytes, prefixKey: config.prefixKey, maxMessageBytes }, 'ext_proc prefix hasher serving');

  let drained: Promise<void> | undefined;
  function drain(): Promise<void> {
    drained ??= (async () => {
      draining = true;
      setServing('NOT_SERVING');
      for (const watcher of watchers) watcher.call.end();
      log.info({ openStreams: live.size }, 'draining: no new streams; open ones finish their request');
      // A stream whose request is complete owes Envoy nothing: closing it
      // cleanly lets Envoy proceed without us. The others end after their answer.
      for (const stream of live) if (isIdle(stream.phase)) stream.call.end();
      // GOAWAY: Envoy opens no new streams here; open ones run to their end.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const session of sessions) session.close();
      const overdue = setTimeout(() => {
        log.warn({ openStreams: live.size }, 'drain timeout: closing the remaining streams');
        for (const stream of live) stream.call.end();
        setTimeout(() => {
          for (const session of sessions) session.destroy();
        }, 1000).unref();
      }, drainTimeoutMs);
      overdue.unref();
      await closed;
      clearTimeout(overdue);
      if (metricsServer) {
        const closing = new Promise<void>((resolve) => metricsServer.server.close(() => resolve()));
        metricsServer.server.closeAllConnections();
        await closing;
      }
      log.info('drained');
    })();
    return drained;
  }

  return { port, metricsPort: metricsServer?.port, metrics, drain };
}

/** Nothing more of the request is owed to this stream in BufferedPartial mode. */
function isIdle(phase: Phase): boolean {
  return phase === 'request-done' || phase === 'body-continues';
}

/** startExtProc, plus draining on SIGTERM and SIGINT: what the command runs. */
export async function runExtProc(options: ExtProcOptions): Promise<ExtProcServer> {
  const server = await startExtProc(options);
  const onSignal = (): void => {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    void server.drain().then(() => process.exit(0));
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  return server;
}
