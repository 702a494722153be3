// Small shared helpers for the benchmark scripts: percentiles and a bounded,
// closed-loop load runner (each worker waits for its answer, as the API server
// and Envoy do).

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  const index = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[index] as number;
}

export interface LoadResult {
  requests: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * Runs `concurrency` workers calling `once` until `maxRequests` or `maxSeconds`
 * (both bounds always apply), optionally paced to `ratePerSecond` in total.
 */
export async function runLoad(
  once: () => Promise<void>,
  options: { concurrency: number; maxRequests: number; maxSeconds: number; ratePerSecond?: number },
): Promise<LoadResult> {
  const latencies: number[] = [];
  let started = 0;
  let errors = 0;
  const begin = performance.now();
  const deadline = begin + options.maxSeconds * 1000;
  const interval = options.ratePerSecond ? 1000 / options.ratePerSecond : 0;
  const worker = async () => {
    while (started < options.maxRequests && performance.now() < deadline) {
      const slot = started++;
      if (interval > 0) {
        const due = begin + slot * interval;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      }
      const t0 = performance.now();
      try {
        await once();
        latencies.push(performance.now() - t0);
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const seconds = (performance.now() - begin) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    requests: latencies.length,
    errors,
    seconds,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

export function formatRow(cells: (string | number)[]): string {
  return `| ${cells.map((c) => (typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toFixed(2)) : c)).join(' | ')} |`;
}
