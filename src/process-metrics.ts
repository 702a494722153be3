import { type Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Node's own metrics (CPU, memory, GC, event-loop delay) into `registry`, for
 * every command that serves /metrics. The event-loop delay is sampled every
 * 100 ms instead of prom-client's default 10 ms: that timer woke an idle
 * process 100 times a second. The idle `webhook` and `ext-proc` commands used
 * 4.5–5.5 ms of CPU a second with it, 1.0–1.5 ms now (bench/RESULTS.md,
 * fifth session). A stalled loop still shows in the samples.
 */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
}
