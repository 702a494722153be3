// Prometheus metrics of the prefix hasher, served on their own HTTP port so a
// scrape never queues behind gRPC traffic.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ErrorReason, Outcome } from './handlers.ts';

export interface ExtProcMetrics {
  registry: Registry;
  streamsStarted: Counter;
  streamsOpen: Gauge;
  outcomes: Counter<'outcome'>;
  errors: Counter<'reason'>;
  handling: Histogram<'message'>;
  /** Counts an answered message; label children are cached (a lookup by label set costs more than the hash). */
  answered(outcome: Outcome, message: string, seconds: number): void;
}

export function createMetrics(): ExtProcMetrics {
  // A registry per server, not prom-client's global one, so several servers
  // can live in one process (the tests start many).
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const outcomes = new Counter({
    name: 'ext_proc_messages_total',
    help: 'ext_proc messages answered, by outcome: hashed (x-prompt-hash set), no-body (headers with end_of_stream or an empty body), headers-answered, passed-through',
    labelNames: ['outcome'],
    registers: [registry],
  });
  const errors = new Counter({
    name: 'ext_proc_stream_errors_total',
    help: 'Streams ended with a gRPC error, by reason (undecodable, too-large, empty-message, out-of-order)',
    labelNames: ['reason'],
    registers: [registry],
  });
  // Start every series at zero so dashboards and rate() see them from the first scrape.
  for (const outcome of ['hashed', 'no-body', 'headers-answered', 'passed-through'] satisfies Outcome[]) outcomes.inc({ outcome }, 0);
  for (const reason of ['undecodable', 'too-large', 'empty-message', 'out-of-order'] satisfies ErrorReason[]) errors.inc({ reason }, 0);
  const handling = new Histogram({
    name: 'ext_proc_message_handling_seconds',
    help: 'Time from a complete ext_proc message to its answer handed to HTTP/2: decode, hash, encode (Envoy waits 200 ms by default)',
    labelNames: ['message'],
    buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.2],
    registers: [registry],
  });
  const outcomeChildren = new Map<string, { inc(): void }>();
  const handlingChildren = new Map<string, { observe(value: number): void }>();
  return {
    registry,
    streamsStarted: new Counter({ name: 'ext_proc_streams_total', help: 'ext_proc streams opened by Envoy', registers: [registry] }),
    streamsOpen: new Gauge({ name: 'ext_proc_streams_open', help: 'ext_proc streams open now', registers: [registry] }),
    outcomes,
    errors,
    handling,
    answered(outcome, message, seconds) {
      let counter = outcomeChildren.get(outcome);
      if (counter === undefined) outcomeChildren.set(outcome, (counter = outcomes.labels({ outcome })));
      counter.inc();
      let histogram = handlingChildren.get(message);
      if (histogram === undefined) handlingChildren.set(message, (histogram = handling.labels({ message })));
      histogram.observe(seconds);
    },
  };
}

/** Serves GET /metrics; resolves once listening, with the bound port. */
export async function serveMetrics(registry: Registry, port: number, host: string): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: metrics are at GET /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (error: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${error instanceof Error ? error.message : String(error)}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return { server, port: (server.address() as AddressInfo).port };
}
