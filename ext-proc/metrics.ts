// Prometheus metrics of the prefix hasher, served on their own HTTP port so a
// scrape never queues behind gRPC traffic.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, type Histogram } from 'prom-client';
import { collectProcessMetrics } from '../src/process-metrics.ts';
import { MAX_UNFINISHED_BYTES, unfinishedMessageBytes } from './grpc-wire.ts';
import type { ErrorReason, Outcome } from './handlers.ts';

// The per-stream and per-message metrics are counted in plain numbers and
// handed to prom-client when it is scraped: through its `collect` hook for the
// counters and the gauge, and as a metric object of its own for the histogram.
// Counting through prom-client on every message (label validation and hashing,
// bucket lookup by float bound) cost 9% of the hasher's capacity at 4 KiB
// (bench/RESULTS.md). prom-client still owns the registry, the default process
// metrics and the exposition format.

export interface ExtProcMetrics {
  registry: Registry;
  /** Rare (a stream that ends with a gRPC error): counted through prom-client directly. */
  errors: Counter<'reason'>;
  streamStarted(): void;
  /** Counts an answered message and how long handling it took. */
  answered(outcome: Outcome, message: string, seconds: number): void;
}

const OUTCOMES = ['hashed', 'no-body', 'headers-answered', 'passed-through'] as const satisfies readonly Outcome[];
const ERROR_REASONS = ['undecodable', 'too-large', 'empty-message', 'out-of-order'] as const satisfies readonly ErrorReason[];
export const HANDLING_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.2];

interface SampleValue {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
}

interface Series {
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A histogram with one label, kept in typed arrays, that prom-client's
 * registry prints like its own Histogram (the same lines in the same order; a
 * unit test compares the two).
 */
export class LabeledHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  private readonly labelName: string;
  private readonly bounds: readonly number[];
  private readonly series = new Map<string, Series>();

  constructor(name: string, help: string, labelName: string, bounds: readonly number[]) {
    this.name = name;
    this.help = help;
    this.labelName = labelName;
    this.bounds = bounds;
  }

  observe(labelValue: string, value: number): void {
    let series = this.series.get(labelValue);
    if (series === undefined) this.series.set(labelValue, (series = { counts: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 }));
    let bucket = 0;
    while (bucket < this.bounds.length && value > (this.bounds[bucket] as number)) bucket++;
    (series.counts[bucket] as number)++;
    series.sum += value;
    series.count++;
  }

  /** What prom-client's registry reads from a metric to print it. */
  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: SampleValue[] }> {
    const values: SampleValue[] = [];
    for (const [labelValue, series] of this.series) {
      let cumulative = 0;
      this.bounds.forEach((bound, i) => {
        cumulative += series.counts[i] as number;
        values.push({ labels: { le: bound, [this.labelName]: labelValue }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { le: '+Inf', [this.labelName]: labelValue }, value: series.count, metricName: `${this.name}_bucket` });
      values.push({ labels: { [this.labelName]: labelValue }, value: series.sum, metricName: `${this.name}_sum` });
      values.push({ labels: { [this.labelName]: labelValue }, value: series.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}

/** `openStreams` reads the server's count of open streams at scrape time (one count, kept by the server). */
export function createMetrics(openStreams: () => number): ExtProcMetrics {
  // A registry per server, not prom-client's global one, so several servers
  // can live in one process (the tests start many).
  const registry = new Registry();
  collectProcessMetrics(registry);
  let started = 0;
  const outcomeCounts = new Map<string, number>(OUTCOMES.map((outcome) => [outcome, 0]));
  new Counter({
    name: 'ext_proc_messages_total',
    help: 'ext_proc messages answered, by outcome: hashed (x-prompt-hash set), no-body (headers with end_of_stream or an empty body), headers-answered, passed-through',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [outcome, count] of outcomeCounts) this.inc({ outcome }, count);
    },
  });
  new Counter({
    name: 'ext_proc_streams_total',
    help: 'ext_proc streams opened by Envoy',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(started);
    },
  });
  new Gauge({
    name: 'ext_proc_streams_open',
    help: 'ext_proc streams open now',
    registers: [registry],
    collect() {
      this.set(openStreams());
    },
  });
  new Gauge({
    name: 'ext_proc_unfinished_message_bytes',
    help: `Bytes held for messages still arriving, over all streams (at most ${MAX_UNFINISHED_BYTES}; past it a stream ends with RESOURCE_EXHAUSTED)`,
    registers: [registry],
    collect() {
      this.set(unfinishedMessageBytes());
    },
  });
  const errors = new Counter({
    name: 'ext_proc_stream_errors_total',
    help: 'Streams ended with a gRPC error, by reason (undecodable, too-large, empty-message, out-of-order)',
    labelNames: ['reason'],
    registers: [registry],
  });
  // Start every series at zero so dashboards and rate() see them from the first scrape.
  for (const reason of ERROR_REASONS) errors.inc({ reason }, 0);
  const handling = new LabeledHistogram(
    'ext_proc_message_handling_seconds',
    'Time from a complete ext_proc message to its answer handed to HTTP/2: decode, hash, encode (Envoy waits 200 ms by default)',
    'message',
    HANDLING_BUCKETS,
  );
  // prom-client's registry takes any object with its metrics' name, get() and reset().
  registry.registerMetric(handling as unknown as Histogram);
  return {
    registry,
    errors,
    streamStarted() {
      started++;
    },
    answered(outcome, message, seconds) {
      outcomeCounts.set(outcome, (outcomeCounts.get(outcome) ?? 0) + 1);
      handling.observe(message, seconds);
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
