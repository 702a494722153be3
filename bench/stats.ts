// Small shared helpers for the benchmark scripts: percentiles and Markdown table rows.

export function percentile(sortedMs: number[], p: number): number {
  if (sortedMs.length === 0) return Number.NaN;
  const index = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[index] as number;
}

export function formatRow(cells: (string | number)[]): string {
  return `| ${cells.map((c) => (typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toFixed(2)) : c)).join(' | ')} |`;
}
