// The prefix hasher's HTTP/2 server: it listens, routes each stream to the
// Process loop (process-stream.ts) or to grpc.health.v1.Health (health.ts),
// serves the metrics, and drains. Plaintext HTTP/2 (Envoy Gateway dials
// ext_proc backends with h2c) on our own framing (h2-connection.ts, HPACK in
// hpack.ts), gRPC framed by grpc-wire.ts: a stream per HTTP request makes
// per-stream overhead the cost that counts. A general gRPC server library
// spent twice the CPU per request on it, and node:http2 makes every header
// value an old-generation object whose mark-compacts were the burst p99
// (bench/RESULTS.md); every connection reads into one buffer
// (shared-read-buffer.ts) for the same reason. Signals: signals.ts.
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import type { PrefixKey } from '../src/model-service.ts';
import { refuse } from './grpc-call.ts';
import { GRPC_CONTENT_TYPE, GrpcStatus } from './grpc-wire.ts';
import { DEFAULT_MAX_MESSAGE_BYTES, loadXxh64, type HandlerConfig, type KeySettings } from './handlers.ts';
import { serveLentReads, type H2Connection, type H2ServerOptions, type H2Stream } from './h2-connection.ts';
import { createHealthService } from './health.ts';
import type { HeaderField } from './hpack.ts';
import { createMetrics, serveMetrics, type ExtProcMetrics } from './metrics.ts';
import { LiveStreams, createProcessLoop, isIdle } from './process-stream.ts';
import { HEALTH_SERVICE, PROCESS_METHOD_PATH } from './protocol.ts';
import { createSharedReadBufferServer } from './shared-read-buffer.ts';

export interface ExtProcOptions {
  port: number;
  /** Required unless `models` is given. */
  prefixBytes?: number | undefined;
  /** What the key is taken from (SPEC §4). Body when absent; the ext-proc command defaults to Conversation. */
  prefixKey?: PrefixKey | undefined;
  /** The Gateway-level hasher's settings per x-ai-eg-model value (HandlerConfig.models); prefixBytes/prefixKey are then unused. */
  models?: ReadonlyMap<string, KeySettings> | undefined;
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

const CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;
/**
 * Per connection. Envoy opens one ext_proc stream per HTTP request in flight
 * and, at this many on one connection, opens another connection.
 */
const MAX_CONCURRENT_STREAMS = 10_000;
/** Envoy's own default limit for request headers (60 KiB), with room. */
const MAX_HEADER_LIST_BYTES = 64 * 1024;
/** Answers to 10,000 streams are ~2 MB; a peer that leaves 16 MiB unread is not reading. */
const MAX_UNSENT_BYTES = 16 * 1024 * 1024;
const UNSUPPORTED_MEDIA_TYPE: readonly HeaderField[] = Object.freeze([Object.freeze([':status', '415'] as const)]);

/** The hasher's HTTP/2 settings and limits (bench/raw-h2-noop.ts serves with the same). */
export function connectionLimits(maxMessageBytes: number): Omit<H2ServerOptions, 'onStream' | 'onError'> {
  return {
    // The stream window holds one whole message, so Envoy sends a 32 KiB
    // body without waiting for a WINDOW_UPDATE.
    initialWindowSize: maxMessageBytes + 5,
    // A connection window for many concurrent bodies (1,000 × 16 KiB), so one
    // connection from Envoy is not throttled to 64 KiB in flight.
    connectionWindowSize: CONNECTION_WINDOW_BYTES,
    maxConcurrentStreams: MAX_CONCURRENT_STREAMS,
    maxHeaderListSize: MAX_HEADER_LIST_BYTES,
    maxUnsentBytes: MAX_UNSENT_BYTES,
  };
}

export async function startExtProc(options: ExtProcOptions): Promise<ExtProcServer> {
  const host = options.host ?? '0.0.0.0';
  const log = options.logger ?? pino({ name: 'modelplane-affinity', base: { component: 'ext-proc' } });
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  if (options.prefixBytes === undefined && options.models === undefined) throw new Error('startExtProc: give prefixBytes, or models for a Gateway-level hasher');
  const config: HandlerConfig = {
    prefixBytes: options.prefixBytes ?? 0,
    prefixKey: options.prefixKey ?? 'Body',
    hash64: await loadXxh64(),
    ...(options.models === undefined ? {} : { models: options.models }),
  };
  const live = new LiveStreams();
  const metrics = createMetrics(() => live.size);
  const connections = new Set<H2Connection>();
  const health = createHealthService();
  let draining = false;
  const serveProcess = createProcessLoop({ config, maxMessageBytes, metrics, log, live, isDraining: () => draining });

  function onStream(stream: H2Stream): void {
    const path = stream.header(':path');
    if (stream.header(':method') !== 'POST' || !(stream.header('content-type') ?? '').startsWith(GRPC_CONTENT_TYPE)) stream.respondAndEnd(UNSUPPORTED_MEDIA_TYPE);
    else if (path === PROCESS_METHOD_PATH) serveProcess(stream);
    else if (path === `/${HEALTH_SERVICE}/Check`) health.serve(stream, false);
    else if (path === `/${HEALTH_SERVICE}/Watch`) health.serve(stream, true);
    else refuse(stream, GrpcStatus.UNIMPLEMENTED, `unknown method ${String(path)}`);
  }
  const connectionOptions: H2ServerOptions = {
    ...connectionLimits(maxMessageBytes),
    onStream,
    onError: (error) => log.debug({ error: error.message }, 'HTTP/2 connection error'),
  };
  const server = createSharedReadBufferServer({
    onConnection(socket) {
      const connection = serveLentReads(socket, connectionOptions);
      connections.add(connection);
      connection.onClose = () => connections.delete(connection);
      if (draining) connection.shutdown();
      return (chunk) => connection.receive(chunk);
    },
    onFallback: (reason) => log.warn({ reason }, 'reading connections without a shared read buffer'),
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
  log.info({ port, metricsPort: metricsServer?.port, ...(config.models === undefined ? { prefixBytes: config.prefixBytes, prefixKey: config.prefixKey } : { models: Object.fromEntries(config.models) }), maxMessageBytes }, 'ext_proc prefix hasher serving');

  let drained: Promise<void> | undefined;
  function drain(): Promise<void> {
    drained ??= (async () => {
      draining = true;
      health.setServing('NOT_SERVING');
      health.endWatches();
      log.info({ openStreams: live.size }, 'draining: no new streams; open ones finish their request');
      // A stream whose request is complete owes Envoy nothing: closing it
      // cleanly lets Envoy proceed without us. The others end after their answer.
      for (const stream of live) if (isIdle(stream.phase)) stream.call.end();
      // GOAWAY: Envoy opens no new streams here; open ones run to their end.
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const connection of connections) connection.shutdown();
      const overdue = setTimeout(() => {
        log.warn({ openStreams: live.size }, 'drain timeout: closing the remaining streams');
        for (const stream of live) stream.call.end();
        setTimeout(() => {
          for (const connection of connections) connection.destroy();
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
