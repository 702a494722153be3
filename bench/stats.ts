// Small shared helpers for the benchmark scripts: percentiles, medians,
// Markdown table rows, a process's CPU time and memory from /proc, and
// samples from a Prometheus text exposition.
import { readdirSync, readFileSync } from 'node:fs';

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  const index = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[index] as number;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/**
 * Runs `run` on `a` and on `b`, `a` first when `pairIndex` (from 0) is even
 * and `b` first when it is odd, so neither always runs after the other.
 * Results come back in [a, b] order.
 */
export function alternatingPair<T, R>(pairIndex: number, a: T, b: T, run: (target: T) => R): [R, R] {
  if (pairIndex % 2 === 0) {
    const first = run(a);
    return [first, run(b)];
  }
  const first = run(b);
  return [run(a), first];
}

/**
 * alternatingPair for any number of targets: in order at even `index`es,
 * in reverse at odd ones, so that over two rounds every target runs as often
 * before as after each other one. Results come back in `targets` order.
 */
export function alternatingRuns<T, R>(index: number, targets: readonly T[], run: (target: T, position: number) => R): R[] {
  const order = targets.map((_, i) => i);
  if (index % 2 === 1) order.reverse();
  const results = new Array<R>(targets.length);
  for (const i of order) results[i] = run(targets[i] as T, i);
  return results;
}

/**
 * alternatingRuns for runs that take time: each run is awaited before the
 * next starts, in the same order, so no two overlap. Results come back in
 * `targets` order.
 */
export async function alternatingRunsAsync<T, R>(index: number, targets: readonly T[], run: (target: T, position: number) => Promise<R>): Promise<R[]> {
  const order: number[] = [];
  alternatingRuns(index, targets, (_, i) => order.push(i));
  const results = new Array<R>(targets.length);
  for (const i of order) results[i] = await run(targets[i] as T, i);
  return results;
}

export function formatRow(cells: (string | number)[]): string {
  return `| ${cells.map((c) => (typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toFixed(2)) : c)).join(' | ')} |`;
}

/** CPU seconds (user + system) a process has used: utime + stime in clock ticks (100/s). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * Seconds a process's threads have spent runnable but waiting for a CPU
 * (the second field of each /proc/<pid>/task/<tid>/schedstat): time other
 * work on the machine kept it off its core.
 */
export function runQueueWaitSeconds(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[1]);
    } catch {
      /* the thread ended between the listing and the read */
    }
  }
  return ns / 1e9;
}

/** A memory line of /proc/<pid>/status in MiB: VmRSS is the resident set now, VmHWM its peak so far. */
export function memoryMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith(`${field}:`));
  return Number(line?.split(/\s+/)[1] ?? Number.NaN) / 1024;
}

export interface Sample {
  labels: Record<string, string>;
  value: number;
}

/** The samples of one series (`name`, e.g. `x_total` or `x_seconds_sum`) in a Prometheus text exposition. */
export function samples(text: string, name: string): Sample[] {
  const found: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line !== name && !line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labelText = line.startsWith(`${name}{`) ? line.slice(name.length + 1, line.lastIndexOf('}')) : '';
    const labels = Object.fromEntries([...labelText.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] as string, m[2] as string]));
    found.push({ labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) });
  }
  return found;
}

/** The sum of a series' samples whose labels include `match`. */
export function sampleSum(text: string, name: string, match: Record<string, string> = {}): number {
  return samples(text, name)
    .filter((s) => Object.entries(match).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}
