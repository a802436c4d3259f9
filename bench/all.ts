/**
 * `npm run bench`: every benchmark once at small sizes (about a minute in all), and one table of
 * their headline rows: workload, netchan, the reference measured in the same run, the ratio and
 * the target. Each benchmark runs as its own process group with BENCH_SUMMARY set and prints its
 * rows as marked lines (bench/summary.ts); its own output is shown only if it fails (or with
 * BENCH_VERBOSE=1). A benchmark past its time limit is killed with its whole group. The full
 * sizes are each `npm run bench:*`.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { table } from './children.js';
import { parseRow, type SummaryRow } from './summary.js';

interface Step {
  name: string;
  script: string;
  args?: string[];
  env: Record<string, string>;
  limitS: number;
}

const STEPS: Step[] = [
  { name: 'in process', script: 'inprocess.ts', env: { BENCH_RUNS: '2', BENCH_SCALE: '0.3' }, limitS: 60 },
  { name: 'one channel over the network', script: 'net.ts', env: { BENCH_MESSAGES: '50000', BENCH_ROUNDTRIPS: '1000', BENCH_RUNS: '2' }, limitS: 120 },
  { name: 'byte streams', script: 'bytes.ts', env: { BENCH_BULK_MIB: '64', BENCH_RUNS: '2' }, limitS: 120 },
  {
    name: 'TCP gateway',
    script: 'gateway.ts',
    env: { BENCH_BULK_MIB: '64', BENCH_ROUNDTRIPS: '1000', BENCH_RUNS: '1', BENCH_ROWS: 'HTTP/2', BENCH_PG_SECONDS: '2' },
    limitS: 150,
  },
  { name: 'idle clients', script: 'scale.ts', args: ['--clients', '500', '--procs', '2', '--floor-clients', '500'], env: {}, limitS: 150 },
  {
    name: 'cluster echo',
    script: 'cluster.ts',
    env: { BENCH_CLIENTS: '200', BENCH_PEERS: 'netchan,raw-h2', BENCH_WARMUP_S: '1', BENCH_SECONDS: '3' },
    limitS: 150,
  },
  { name: 'in the browser', script: 'browser.ts', env: { BENCH_MESSAGES: '10000', BENCH_ROUNDTRIPS: '500', BENCH_RUNS: '1' }, limitS: 120 },
];

const VERBOSE = process.env.BENCH_VERBOSE === '1';

/** Runs one step; its rows, or a row saying it failed. */
function runStep(step: Step): Promise<SummaryRow[]> {
  const script = fileURLToPath(new URL(`./${step.script}`, import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...(step.args ?? [])], {
    env: { ...process.env, ...step.env, BENCH_SUMMARY: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
    // its own process group: the step and every process it started end together
    detached: true,
  });
  const rows: SummaryRow[] = [];
  let output = '';
  let pending = '';
  const keep = (text: string) => {
    output = (output + text).slice(-8000);
    if (VERBOSE) process.stderr.write(text);
  };
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text: string) => {
    const lines = (pending + text).split('\n');
    pending = lines.pop()!;
    for (const line of lines) {
      const row = parseRow(line);
      if (row) rows.push(row);
      else keep(`${line}\n`);
    }
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', keep);
  const killGroup = () => {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // the group is gone
    }
  };
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup();
  }, step.limitS * 1000);
  process.once('exit', killGroup);
  return new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      // what it started and left behind goes with it
      killGroup();
      process.off('exit', killGroup);
      if (code === 0 && rows.length > 0) return resolve(rows);
      const why = timedOut ? `not done within ${step.limitS} s` : `exited with ${signal ?? code}`;
      if (!VERBOSE) process.stderr.write(output);
      resolve([...rows, { workload: step.name, netchan: 'FAILED', reference: why, ratio: '', target: '' }]);
    });
  });
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => process.exit(130));

const started = Date.now();
const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
const loadAtStart = load();
const all: SummaryRow[] = [];
for (const step of STEPS) {
  const t0 = Date.now();
  process.stderr.write(`bench: ${step.name} …`);
  const rows = await runStep(step);
  process.stderr.write(` ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  all.push(...rows);
}

console.log(`netchan benchmarks, small sizes — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}`);
console.log(`every peer in the same run; servers in their own processes on 127.0.0.1, TLS 1.3; ${((Date.now() - started) / 1000).toFixed(0)} s; load average ${loadAtStart} at the start, ${load()} at the end`);
console.log('');
console.log(
  table(
    ['workload', 'netchan', 'reference (same run)', 'ratio', 'target'],
    all.map((r) => [r.workload, r.netchan, r.reference, r.ratio, r.target ? `${r.target} ${r.met === undefined ? '' : r.met ? 'met' : '**not met**'}`.trim() : '']),
  ),
);
process.exit(all.some((r) => r.netchan === 'FAILED') ? 1 : 0);
