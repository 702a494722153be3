// The prefix hasher's gRPC server: the stream loop (receive, hand the message
// to handlers.ts, send the answer), grpc.health.v1.Health, metrics, and
// draining on SIGTERM. Plaintext HTTP/2: Envoy Gateway dials ext_proc
// backends with h2c.
import * as grpc from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import { pino, type Logger } from 'pino';
import {
  DEFAULT_MAX_MESSAGE_BYTES,
  decodeRequest,
  handleMessage,
  loadXxh64,
  type Decoded,
  type HandlerConfig,
  type Phase,
} from './handlers.ts';
import { createMetrics, serveMetrics, type ExtProcMetrics } from './metrics.ts';
import { EXT_PROC_SERVICE, processMethod, type ProcessingResponse } from './protocol.ts';

export interface ExtProcOptions {
  port: number;
  prefixBytes: number;
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

type ProcessCall = grpc.ServerDuplexStream<Decoded, ProcessingResponse>;

interface LiveStream {
  call: ProcessCall;
  phase: Phase;
  /** Our status (OK or an error) has been handed to gRPC. */
  ended: boolean;
}

export async function startExtProc(options: ExtProcOptions): Promise<ExtProcServer> {
  const host = options.host ?? '0.0.0.0';
  const log = options.logger ?? pino({ name: 'modelplane-affinity', base: { component: 'ext-proc' } });
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  const config: HandlerConfig = { prefixBytes: options.prefixBytes, hash64: await loadXxh64() };
  const metrics = createMetrics();
  const live = new Set<LiveStream>();
  let draining = false;

  function end(stream: LiveStream, error?: { code: grpc.status; details: string }): void {
    if (stream.ended) return;
    stream.ended = true;
    // Emitting 'error' on a grpc-js server stream ends it with that status.
    if (error === undefined) stream.call.end();
    else stream.call.emit('error', error);
  }

  function serveStream(call: ProcessCall): void {
    const stream: LiveStream = { call, phase: 'awaiting-headers', ended: false };
    live.add(stream);
    metrics.streamsStarted.inc();
    metrics.streamsOpen.inc();

    call.on('data', (decoded: Decoded) => {
      if (stream.ended) return;
      const started = process.hrtime.bigint();
      const result = decoded.ok ? handleMessage(stream.phase, decoded.request, config) : decoded;
      if (!result.ok) {
        metrics.errors.inc({ reason: result.reason });
        // result.message never contains body bytes (see handlers.ts).
        log.warn({ peer: call.getPeer(), reason: result.reason, code: grpc.status[result.code], error: result.message }, 'ending ext_proc stream with an error');
        end(stream, { code: result.code, details: result.message });
        return;
      }
      stream.phase = result.phase;
      call.write(result.response);
      metrics.answered(result.outcome, decoded.ok ? (decoded.request.request ?? 'none') : 'none', Number(process.hrtime.bigint() - started) / 1e9);
      if (draining && isIdle(stream.phase)) end(stream);
    });
    // Envoy half-closed: nothing more will come, so close our side cleanly.
    call.on('end', () => end(stream));
    // grpc-js reports 'cancelled' once the call is over, whether our status
    // went out or Envoy reset the stream; a reset is routine (the HTTP request
    // ended), so it is not an error.
    call.on('cancelled', () => {
      if (!stream.ended) log.debug({ peer: call.getPeer(), phase: stream.phase }, 'ext_proc stream reset by the client');
      stream.ended = true;
      if (live.delete(stream)) metrics.streamsOpen.dec();
    });
    call.on('error', (error: unknown) => log.debug({ error: error instanceof Error ? error.message : String(error) }, 'ext_proc stream error'));
  }

  const method = processMethod();
  const server = new grpc.Server({
    // grpc-js refuses larger messages itself (before buffering them); between
    // maxMessageBytes and this, decodeRequest answers with a clearer message.
    'grpc.max_receive_message_length': Math.max(4 * maxMessageBytes, 1024 * 1024),
    // No channelz service is served, so its per-call bookkeeping is pure cost.
    'grpc.enable_channelz': 0,
  });
  server.addService(
    { Process: { ...method, requestDeserialize: (bytes: Buffer): Decoded => decodeRequest(bytes, maxMessageBytes, method.requestDeserialize) } },
    { Process: serveStream },
  );
  const health = new HealthImplementation({ '': 'SERVING', [EXT_PROC_SERVICE]: 'SERVING' });
  health.addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${options.port}`, grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  let metricsServer: Awaited<ReturnType<typeof serveMetrics>> | undefined;
  if (options.metricsPort !== undefined) {
    try {
      metricsServer = await serveMetrics(metrics.registry, options.metricsPort, host);
    } catch (error) {
      server.forceShutdown();
      throw error;
    }
  }
  log.info({ port, metricsPort: metricsServer?.port, prefixBytes: options.prefixBytes, maxMessageBytes }, 'ext_proc prefix hasher serving');

  let drained: Promise<void> | undefined;
  function drain(): Promise<void> {
    drained ??= (async () => {
      draining = true;
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(EXT_PROC_SERVICE, 'NOT_SERVING');
      log.info({ openStreams: live.size }, 'draining: no new streams; open ones finish their request');
      // A stream whose request is complete owes Envoy nothing: closing it
      // cleanly lets Envoy proceed without us. The others end after their answer.
      for (const stream of live) if (isIdle(stream.phase)) end(stream);
      const closed = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      const overdue = setTimeout(() => {
        log.warn({ openStreams: live.size }, 'drain timeout: closing the remaining streams');
        for (const stream of live) end(stream);
        setTimeout(() => server.forceShutdown(), 1000).unref();
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
