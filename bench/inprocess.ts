/**
 * In-process micro-benchmark: channel values/s (capacity 0 and 1024) and codec
 * encode+decode/s for a small message, next to plain msgpackr. Prints one table.
 * Run: npm run bench:inprocess   (BENCH_RUNS, default 5; BENCH_SCALE multiplies the counts)
 */
import os from 'node:os';
import { Packr } from 'msgpackr';
import { Channel } from '../lib/core/channel.js';
import { Codec } from '../lib/wire/codec.js';
import { ratioRow, summarize } from './summary.js';

const SCALE = Number(process.env.BENCH_SCALE ?? 1);
const scaled = (count: number) => Math.max(1000, Math.round(count * SCALE));

interface Row { name: string; ops: number; seconds: number }

async function channelThroughput(capacity: number, count: number): Promise<Row> {
  const ch = new Channel<number>(capacity);
  const start = process.hrtime.bigint();
  const producer = (async () => {
    for (let i = 0; i < count; i++) await ch.send(i);
    ch.close();
  })();
  let sum = 0;
  for await (const v of ch) sum += v;
  await producer;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (sum !== (count * (count - 1)) / 2) throw new Error('benchmark lost values');
  return { name: `channel capacity ${capacity}: await send / for await`, ops: count, seconds };
}

function codecThroughput(count: number): Row {
  const codec = new Codec();
  const msg = { id: 12345, name: 'task', payload: 'hello world', ts: 1700000000000 };
  const start = process.hrtime.bigint();
  let n = 0;
  for (let i = 0; i < count; i++) {
    msg.id = i;
    const out = codec.decode(codec.encode(msg)) as { id: number };
    n += out.id === i ? 1 : 0;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (n !== count) throw new Error('codec round trip mismatch');
  return { name: 'codec encode+decode, small message', ops: count, seconds };
}

/** The peer: plain msgpackr with the same settings and no validation, no hooks, no walk. */
function msgpackrThroughput(count: number): Row {
  const packr = new Packr({ useRecords: false, moreTypes: false });
  const msg = { id: 12345, name: 'task', payload: 'hello world', ts: 1700000000000 };
  const start = process.hrtime.bigint();
  let n = 0;
  for (let i = 0; i < count; i++) {
    msg.id = i;
    const out = packr.unpack(packr.pack(msg)) as { id: number };
    n += out.id === i ? 1 : 0;
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (n !== count) throw new Error('msgpackr round trip mismatch');
  return { name: 'plain msgpackr pack+unpack, same message (peer)', ops: count, seconds };
}

function best(rows: Row[]): Row {
  return rows.reduce((a, b) => (b.ops / b.seconds > a.ops / a.seconds ? b : a));
}

async function main(): Promise<void> {
  const runs = Number(process.env.BENCH_RUNS ?? 5);
  const rows: Row[] = [];
  for (const [capacity, count] of [[0, scaled(1_000_000)], [1024, scaled(5_000_000)]] as const) {
    const results: Row[] = [];
    for (let r = 0; r < runs; r++) results.push(await channelThroughput(capacity, count));
    rows.push(best(results));
  }
  const codecRuns: Row[] = [];
  for (let r = 0; r < runs; r++) {
    codecRuns.push(codecThroughput(scaled(1_000_000)));
  }
  rows.push(best(codecRuns));
  const rawRuns: Row[] = [];
  for (let r = 0; r < runs; r++) rawRuns.push(msgpackrThroughput(scaled(1_000_000)));
  rows.push(best(rawRuns));

  console.log(`netchan in-process benchmark — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, best of ${runs}`);
  console.log('| workload | ops | seconds | ops/s |');
  console.log('|---|---:|---:|---:|');
  for (const row of rows) {
    console.log(`| ${row.name} | ${row.ops} | ${row.seconds.toFixed(3)} | ${(row.ops / row.seconds / 1e6).toFixed(2)} M |`);
  }
  const opsPerS = (row: Row) => row.ops / row.seconds;
  const mops = (n: number) => `${(n / 1e6).toFixed(2)} M ops/s`;
  summarize([
    ...rows.slice(0, 2).map((row) => ({ workload: `in process, ${row.name}`, netchan: mops(opsPerS(row)), reference: '', ratio: '', target: '' })),
    ratioRow('in process, codec encode+decode (validated), small message', opsPerS(rows[2]!), { label: 'plain msgpackr', value: opsPerS(rows[3]!) }, mops),
  ]);
}

await main();
