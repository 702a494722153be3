import { Counter, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../src/process-metrics.ts';

export interface WebhookMetrics {
  registry: Registry;
  requests: Counter<'path' | 'result'>;
  duration: Histogram<'path'>;
  connections: Counter;
}

export function createWebhookMetrics(registry = new Registry()): WebhookMetrics {
  collectProcessMetrics(registry);
  return {
    registry,
    requests: new Counter({
      name: 'modelplane_affinity_admission_requests_total',
      help: 'AdmissionReviews answered, by path and result (allowed, patched, denied, skipped, malformed).',
      labelNames: ['path', 'result'],
      registers: [registry],
    }),
    connections: new Counter({
      name: 'modelplane_affinity_webhook_tls_connections_total',
      help: 'TLS connections accepted; the API server keeps them alive, so this grows slowly when all is well.',
      registers: [registry],
    }),
    duration: new Histogram({
      name: 'modelplane_affinity_admission_duration_seconds',
      help: 'Time to answer one AdmissionReview, body parsing included.',
      labelNames: ['path'],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05],
      registers: [registry],
    }),
  };
}
