/**
 * The rows of `npm run bench` (bench/all.ts): each benchmark, run with BENCH_SUMMARY set, prints
 * its headline rows as marked JSON lines on stdout next to its own table, and the runner gathers
 * them into one table.
 */

/** One row: a workload, netchan's figure, the reference's, their ratio and the target. */
export interface SummaryRow {
  workload: string;
  netchan: string;
  reference: string;
  ratio: string;
  target: string;
  /** Whether the target is met; absent when the row has no target. */
  met?: boolean;
}

const MARK = '#netchan-bench-row ';

/** Prints `rows` for the runner, when it asked for them. */
export function summarize(rows: SummaryRow[]): void {
  if (!process.env.BENCH_SUMMARY) return;
  for (const row of rows) console.log(MARK + JSON.stringify(row));
}

/** The row a line of a benchmark's output carries, if it is one. */
export function parseRow(line: string): SummaryRow | null {
  return line.startsWith(MARK) ? (JSON.parse(line.slice(MARK.length)) as SummaryRow) : null;
}

/**
 * A row comparing netchan with a reference of the same unit: ratio netchan / reference, the target
 * a bound on it (`min` for throughput, `max` for latency and memory).
 */
export function ratioRow(
  workload: string,
  netchan: number,
  reference: { label: string; value: number },
  format: (n: number) => string,
  target?: { min?: number; max?: number },
): SummaryRow {
  const ratio = netchan / reference.value;
  const row: SummaryRow = {
    workload,
    netchan: format(netchan),
    reference: `${reference.label}: ${format(reference.value)}`,
    ratio: Number.isFinite(ratio) ? `${ratio.toFixed(2)} ×` : '-',
    target: '',
  };
  if (target?.min !== undefined) {
    row.target = `≥ ${target.min} ×`;
    row.met = ratio >= target.min;
  } else if (target?.max !== undefined) {
    row.target = `≤ ${target.max} ×`;
    row.met = ratio <= target.max;
  }
  return row;
}
