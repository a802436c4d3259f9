/**
 * Byte-stream bulk benchmark: a netchan byte stream (a Readable inside a value) carrying
 * BENCH_BULK_MIB MiB one way, client → server and server → client, next to one raw HTTP/2 stream
 * over TLS 1.3 carrying the same bytes with netchan's HTTP/2 windows (1 MiB per stream, 32 MiB
 * per connection). The server is its own process (bench/net-server.ts); every transfer is counted
 * and its CRC-32 checked at the receiver. Netchan and the raw stream alternate, best of BENCH_RUNS.
 *
 *   upload    client: `await upload.send({ data: readable, reply })`, then the server's answer
 *             {bytes, crc} once it has read `data` to its end
 *   download  client: `await download.send({ bytes, reply })`; the answer carries `{ data }`,
 *             a Readable of the server's, which the client reads to its end
 *
 * Run: npm run bench:bytes   (BENCH_BULK_MIB, BENCH_RUNS; BENCH_CPU_PROF_DIR: a CPU profile of
 * the netchan server there, and of this process with `node --cpu-prof --import tsx bench/bytes.ts`)
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import type { Readable } from 'node:stream';
import { Channel, connect } from '../lib/index.js';
import { generateCertificates } from '../lib/transport/devcert.js';
import { bulkSource, expected, receiveAll, verify, type Received } from './bulk-data.js';
import { startPeer, stopPeer } from './net-peer.js';
import { ratioRow, summarize } from './summary.js';

const BYTES = Number(process.env.BENCH_BULK_MIB ?? 256) * 1024 * 1024;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const PROFILE_DIR = process.env.BENCH_CPU_PROF_DIR;

const certs = await generateCertificates({ hosts: ['localhost', '127.0.0.1'] });
const env = { BENCH_KEY: certs.key, BENCH_CERT: certs.cert };
const want = expected(BYTES);
const WARMUP_BYTES = Math.min(BYTES, 16 * 1024 * 1024);

/** One transfer: MB/s, and the CPU time per MB of this process and of the server's. */
interface Transfer {
  mbs: number;
  clientCpuUs: number;
  serverCpuUs: number;
}

/** CPU time (user + system) of process `pid` so far, µs, from /proc (10 ms steps). */
function cpuOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1e6) / 100;
}

/** Times one transfer of BYTES bytes by `run`, the server being process `serverPid`. */
async function timed(run: () => Promise<void>, serverPid: number): Promise<Transfer> {
  const cpu = process.cpuUsage();
  const serverCpu = cpuOf(serverPid);
  const start = process.hrtime.bigint();
  await run();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpu);
  const mb = BYTES / 1e6;
  return { mbs: mb / seconds, clientCpuUs: (used.user + used.system) / mb, serverCpuUs: (cpuOf(serverPid) - serverCpu) / mb };
}

/** One transfer each way. */
interface Peer {
  up(): Promise<Transfer>;
  down(): Promise<Transfer>;
  close(): Promise<void>;
}

async function netchanPeer(port: number, serverPid: number): Promise<Peer> {
  const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert });
  const upload = session.channel<{ data: Readable; reply: Channel<Received> }>('upload');
  const download = session.channel<{ bytes: number; reply: Channel<{ data: Readable }> }>('download');
  const up = async (bytes: number) => {
    const reply = new Channel<Received>(1);
    await upload.send({ data: bulkSource(bytes), reply });
    verify('netchan upload', await reply.receive(), bytes === BYTES ? want : expected(bytes));
  };
  const down = async (bytes: number) => {
    const reply = new Channel<{ data: Readable }>(1);
    await download.send({ bytes, reply });
    const { data } = await reply.receive();
    verify('netchan download', await receiveAll(data as AsyncIterable<Buffer>), bytes === BYTES ? want : expected(bytes));
  };
  await up(WARMUP_BYTES);
  await down(WARMUP_BYTES);
  return { up: () => timed(() => up(BYTES), serverPid), down: () => timed(() => down(BYTES), serverPid), close: () => session.close() };
}

async function rawPeer(port: number, serverPid: number): Promise<Peer> {
  const client = http2.connect(`https://localhost:${port}`, { ca: certs.caCert, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024 } });
  client.on('error', () => undefined); // reported through the streams
  await new Promise((r) => client.once('connect', r));
  client.setLocalWindowSize(32 * 1024 * 1024);
  const up = async (bytes: number) => {
    const stream = client.request({ ':method': 'POST', ':path': '/up' });
    bulkSource(bytes).pipe(stream);
    let body = '';
    stream.setEncoding('utf8');
    for await (const chunk of stream) body += chunk as string;
    verify('raw upload', JSON.parse(body) as Received, bytes === BYTES ? want : expected(bytes));
  };
  const down = async (bytes: number) => {
    const stream = client.request({ ':method': 'GET', ':path': '/down', 'bench-bytes': String(bytes) });
    stream.end();
    verify('raw download', await receiveAll(stream), bytes === BYTES ? want : expected(bytes));
  };
  await up(WARMUP_BYTES);
  await down(WARMUP_BYTES);
  return {
    up: () => timed(() => up(BYTES), serverPid),
    down: () => timed(() => down(BYTES), serverPid),
    close: () => new Promise<void>((r) => client.close(() => r())),
  };
}

const prof = (name: string) => (PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}/${name}`] : []);
const netchanServer = await startPeer('netchan', env, prof('netchan-server'));
const rawServer = await startPeer('raw-h2-bytes', env);
const runs = { netchan: { up: [] as Transfer[], down: [] as Transfer[] }, raw: { up: [] as Transfer[], down: [] as Transfer[] } };
try {
  const peers = { netchan: await netchanPeer(netchanServer.port, netchanServer.child.pid!), raw: await rawPeer(rawServer.port, rawServer.child.pid!) };
  // alternate, so that the machine's drift hits both alike
  for (let r = 0; r < RUNS; r++) {
    for (const dir of ['up', 'down'] as const) {
      for (const name of r % 2 === 0 ? (['netchan', 'raw'] as const) : (['raw', 'netchan'] as const)) runs[name][dir].push(await peers[name][dir]());
    }
  }
  await Promise.all([peers.netchan.close(), peers.raw.close()]);
} finally {
  await Promise.all([stopPeer(netchanServer.child, PROFILE_DIR ? 30_000 : 2000), stopPeer(rawServer.child)]);
}

const rates = (ts: Transfer[]) => ts.map((t) => t.mbs);
const best = (ts: Transfer[]) => Math.max(...rates(ts));
const spread = (ts: Transfer[]) => `${Math.min(...rates(ts)).toFixed(0)}–${best(ts).toFixed(0)}`;
const cpu = (ts: Transfer[], side: 'clientCpuUs' | 'serverCpuUs') => {
  const xs = ts.map((t) => t[side]);
  return `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`;
};
const mbs = (n: number) => `${n.toFixed(0)} MB/s`;
const label = (dir: 'up' | 'down') => (dir === 'up' ? 'client → server (a Readable inside a sent value)' : 'server → client (a Readable inside the answer)');
console.log(`netchan byte-stream benchmark — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}`);
console.log(`server in its own process on 127.0.0.1, TLS 1.3; ${BYTES / 1024 / 1024} MiB per transfer, count and CRC-32 checked; best of ${RUNS} (range in brackets), runs alternating`);
console.log('');
console.log('| workload | netchan byte stream | one raw HTTP/2 stream | ratio | target |');
console.log('|---|---:|---:|---:|---:|');
for (const dir of ['up', 'down'] as const) {
  const n = best(runs.netchan[dir]);
  const raw = best(runs.raw[dir]);
  console.log(`| ${label(dir)} | ${mbs(n)} (${spread(runs.netchan[dir])}) | ${mbs(raw)} (${spread(runs.raw[dir])}) | ${(n / raw).toFixed(2)} × | ≥ 0.9 × |`);
}
console.log('');
console.log('CPU time per MB, µs (range over the runs): client / server');
console.log('');
console.log('| workload | netchan byte stream | one raw HTTP/2 stream |');
console.log('|---|---:|---:|');
for (const dir of ['up', 'down'] as const) {
  const side = (ts: Transfer[]) => `${cpu(ts, 'clientCpuUs')} / ${cpu(ts, 'serverCpuUs')}`;
  console.log(`| ${label(dir)} | ${side(runs.netchan[dir])} | ${side(runs.raw[dir])} |`);
}
summarize(
  (['up', 'down'] as const).map((dir) =>
    ratioRow(
      `byte stream bulk, ${dir === 'up' ? 'client → server' : 'server → client'}, ${BYTES / 1024 / 1024} MiB`,
      best(runs.netchan[dir]),
      { label: 'one raw HTTP/2 stream', value: best(runs.raw[dir]) },
      mbs,
      { min: 0.9 },
    ),
  ),
);
process.exit(0);
