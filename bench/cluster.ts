/**
 * Cluster echo benchmark: one server sends tasks, every client echoes each one
 * back, at 100, 1,000 and 10,000 clients (about 7 minutes in all on 2 cores; most of it is
 * connecting 10,000 clients six times), for netchan and the same workload on:
 *   raw TLS       netchan's codec and length-prefixed frames straight on a TLS socket, no channel
 *                 semantics (the limit); one write per chunk read, on both sides
 *   raw HTTP/2    the same frames on one Node http2 stream per client (TLS): what HTTP/2 itself
 *                 costs, netchan's transport without its semantics
 *   raw-h2-pair   the same frames on two raw HTTP/2 streams per client, laid out as a `dial`
 *                 client's channels (tasks on one, echoes on the other, acks back), no semantics
 *   ws            ws over TLS (https server), the same codec, one binary message per task
 *   grpc          @grpc/grpc-js, one bidi stream per client over TLS, a generic service whose
 *                 serialize/deserialize are the same codec (no .proto)
 *   socket.io     socket.io over TLS, WebSocket transport only, its own JSON encoding of the
 *                 same object (its idiomatic use: a Buffer would cost it a second frame)
 *
 * The workload is the same for all: the message `{ id, name: 'task', payload: 'hello world', ts }`,
 * 16 tasks in flight per client (BENCH_WINDOW). The others send 16 to each client and one more for
 * every echo; netchan's `listen` channels have capacity 16, so each client's receive handle
 * prefetches 16 tasks and the server's `send` loop refills them as they are taken (the demo's
 * code otherwise: `for await (task of receive) await send.send(task)`). Each client is its own
 * connection (TLS 1.3, loopback, certificate verified).
 *
 * Every peer in the same run; the server in its own process, the clients in BENCH_CLIENT_PROCS
 * (default 2) others. For each cell: all clients connect, the server starts, BENCH_WARMUP_S
 * (default 2) of warm-up, then the server counts for BENCH_SECONDS (default 5). Processed msg/s =
 * (tasks sent + echoes received by the server) / seconds, as in the demo; also the CPU time per
 * processed message of the server and of all client processes together.
 *
 *   npm run bench:cluster
 *   BENCH_CLIENTS=100,1000 BENCH_PEERS=netchan,raw-tls npm run bench:cluster
 *   BENCH_CPU_PROF_DIR=.scratch/prof BENCH_PEERS=netchan npm run bench:cluster   # server and client profiles
 */
import os from 'node:os';
import { generateCertificates } from '../lib/transport/devcert.js';
import { Child, killAll, rate, table, type Message } from './children.js';
import { ratioRow, summarize } from './summary.js';

const ALL_PEERS = ['netchan', 'raw-tls', 'raw-h2', 'raw-h2-pair', 'ws', 'grpc', 'socket.io'];
const LABELS: Record<string, string> = {
  netchan: 'netchan (`listen`/`dial`)',
  'raw-tls': 'raw TLS, same codec + framing',
  'raw-h2': 'raw HTTP/2 stream over TLS, same codec + framing',
  'raw-h2-pair': 'two raw HTTP/2 streams per client as netchan, acks back',
  ws: 'ws over TLS, same codec',
  grpc: '@grpc/grpc-js bidi stream, same codec',
  'socket.io': 'socket.io over TLS (websocket)',
};
const SIZES = (process.env.BENCH_CLIENTS ?? '100,1000,10000').split(',').map(Number);
const PEERS = (process.env.BENCH_PEERS ?? ALL_PEERS.join(',')).split(',');
const CLIENT_PROCS = Number(process.env.BENCH_CLIENT_PROCS ?? 2);
const WINDOW = Number(process.env.BENCH_WINDOW ?? 16);
const WARMUP_MS = Number(process.env.BENCH_WARMUP_S ?? 2) * 1000;
const MEASURE_MS = Number(process.env.BENCH_SECONDS ?? 5) * 1000;
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
/** Where the servers write CPU profiles (`node --cpu-prof`), when set. */
const PROFILE_DIR = process.env.BENCH_CPU_PROF_DIR;
/** Longest a cell may take to connect its clients, in ms. */
const CONNECT_TIMEOUT_MS = Number(process.env.BENCH_CONNECT_TIMEOUT_S ?? 240) * 1000;

for (const p of PEERS) {
  if (!ALL_PEERS.includes(p)) {
    console.error(`bench:cluster: unknown peer ${p} (peers: ${ALL_PEERS.join(', ')})`);
    process.exit(2);
  }
}
for (const n of [...SIZES, CLIENT_PROCS, WINDOW, WARMUP_MS, MEASURE_MS, CONCURRENCY]) {
  if (!Number.isInteger(n) || n < 1) {
    console.error('bench:cluster: BENCH_CLIENTS, BENCH_CLIENT_PROCS, BENCH_WINDOW, BENCH_WARMUP_S, BENCH_SECONDS, BENCH_CONCURRENCY must be positive integers');
    process.exit(2);
  }
}

const certs = await generateCertificates({ hosts: ['localhost', '127.0.0.1'] });
const env = { BENCH_KEY: certs.key, BENCH_CERT: certs.cert, BENCH_CA: certs.caCert, BENCH_WINDOW: String(WINDOW) };
const script = new URL('./cluster-peers.ts', import.meta.url);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Count = Message & { sent: number; received: number; atMs: number; cpu: NodeJS.CpuUsage };
interface Cell {
  rate: number;
  /** Server CPU time per processed message, µs. */
  cpuUs: number;
  /** Server CPU use over the window, in cores. */
  cores: number;
  /** CPU time of all client processes per processed message, µs. */
  clientCpuUs: number;
  note?: string;
}

async function runCell(peer: string, clients: number): Promise<Cell> {
  // (one profile per thread, tsx's loader thread included: the server's is the largest)
  const prof = PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}/${peer}-${clients}`] : [];
  const server = new Child(`${peer} server`, script, ['server', peer], env, prof);
  const procs: Child[] = [];
  try {
    const { port } = (await server.next('ready', 30_000)) as Message & { port: number };
    const nprocs = Math.min(CLIENT_PROCS, clients);
    const clientProf = PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}/${peer}-${clients}-clients`] : [];
    for (let i = 0; i < nprocs; i++) procs.push(new Child(`${peer} clients-${i}`, script, ['clients', peer], env, clientProf));
    await Promise.all(procs.map((p) => p.next('ready', 30_000)));
    const per = Math.floor(clients / nprocs);
    const started = Date.now();
    const dialed = await Promise.all(
      procs.map(
        (p, i) =>
          p.ask({ type: 'dial', port, count: i === nprocs - 1 ? clients - per * (nprocs - 1) : per, concurrency: CONCURRENCY }, 'dialed', CONNECT_TIMEOUT_MS) as Promise<
            Message & { connected: number; errors: [string, number][] }
          >,
      ),
    );
    const connected = dialed.reduce((s, d) => s + d.connected, 0);
    if (connected < clients) {
      const errs = dialed.flatMap((d) => d.errors.map(([m, n]) => `${n} × ${m}`)).slice(0, 3);
      throw new Error(`${clients - connected} of ${clients} clients failed to connect: ${errs.join('; ')}`);
    }
    // every client's connection (or call) has reached the server before it starts
    const deadline = Date.now() + 30_000;
    let seen = 0;
    while ((seen = ((await server.ask({ type: 'conns' }, 'conns', 10_000)) as Message & { n: number }).n) < clients) {
      if (Date.now() > deadline) throw new Error(`only ${seen} of ${clients} clients reached the server`);
      await sleep(100);
    }
    const connectS = (Date.now() - started) / 1000;
    server.send({ type: 'go' });
    await sleep(WARMUP_MS);
    const clientCpu = async () => {
      const all = await Promise.all(procs.map((p) => p.ask({ type: 'cpu' }, 'cpu', 30_000) as Promise<Message & { cpu: NodeJS.CpuUsage }>));
      return all.reduce((s, m) => s + m.cpu.user + m.cpu.system, 0);
    };
    const [a, ca] = await Promise.all([server.ask({ type: 'count' }, 'count', 30_000) as Promise<Count>, clientCpu()]);
    await sleep(MEASURE_MS);
    const [b, cb] = await Promise.all([server.ask({ type: 'count' }, 'count', 30_000) as Promise<Count>, clientCpu()]);
    const seconds = (b.atMs - a.atMs) / 1000;
    const processed = b.sent + b.received - a.sent - a.received;
    const cpuUs = b.cpu.user + b.cpu.system - a.cpu.user - a.cpu.system;
    const sysShare = (b.cpu.system - a.cpu.system) / Math.max(1, cpuUs);
    const cell = { rate: processed / seconds, cpuUs: cpuUs / Math.max(1, processed), cores: cpuUs / 1e6 / seconds, clientCpuUs: (cb - ca) / Math.max(1, processed) };
    console.error(
      `  ${peer} × ${clients}: ${rate(cell.rate)} msg/s, server ${cell.cpuUs.toFixed(2)} µs CPU per message ` +
        `(${cell.cores.toFixed(2)} cores, ${(sysShare * 100).toFixed(0)} % in the kernel), clients ${cell.clientCpuUs.toFixed(2)} µs; connected in ${connectS.toFixed(1)} s`,
    );
    return cell;
  } finally {
    // a profiled server writes its profile as it exits
    await Promise.all([server.stop(PROFILE_DIR ? 30_000 : 1000), ...procs.map((c) => c.stop(PROFILE_DIR ? 30_000 : 1000))]);
  }
}

console.error(`bench:cluster: peers ${PEERS.join(', ')}; clients ${SIZES.join(', ')}; ${CLIENT_PROCS} client processes; window ${WINDOW}; ${WARMUP_MS / 1000} s warm-up + ${MEASURE_MS / 1000} s`);
const results = new Map<string, Cell>();
for (const clients of SIZES) {
  for (const peer of PEERS) {
    try {
      results.set(`${peer}/${clients}`, await runCell(peer, clients));
    } catch (err) {
      console.error(`  ${peer} × ${clients}: FAILED: ${(err as Error).message}`);
      results.set(`${peer}/${clients}`, { rate: NaN, cpuUs: NaN, cores: NaN, clientCpuUs: NaN, note: 'failed' });
    }
    await sleep(500);
  }
}
killAll();

console.log('');
console.log(`cluster echo — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}`);
console.log(`server in its own process, clients in ${CLIENT_PROCS} others, 127.0.0.1, TLS 1.3; ${WINDOW} tasks in flight per client; ${WARMUP_MS / 1000} s warm-up, ${MEASURE_MS / 1000} s measured`);
console.log('processed msg/s at the server (tasks sent + echoes received), ratio to raw TLS at the same size');
console.log('');
const head = ['peer', ...SIZES.flatMap((n) => [`${n.toLocaleString('en')} clients`, '× raw TLS'])];
const rows = PEERS.map((peer) => [
  LABELS[peer]!,
  ...SIZES.flatMap((n) => {
    const cell = results.get(`${peer}/${n}`)!;
    const raw = results.get(`raw-tls/${n}`);
    if (cell.note) return [cell.note, ''];
    return [rate(cell.rate), raw && !raw.note ? `${(cell.rate / raw.rate).toFixed(2)} ×` : ''];
  }),
]);
console.log(table(head, rows));
console.log('');
console.log('CPU per processed message, µs: server (server CPU use in cores) / all client processes');
console.log('');
console.log(
  table(
    ['peer', ...SIZES.map((n) => `${n.toLocaleString('en')} clients`)],
    PEERS.map((peer) => [
      LABELS[peer]!,
      ...SIZES.map((n) => {
        const c = results.get(`${peer}/${n}`)!;
        return c.note ? c.note : `${c.cpuUs.toFixed(2)} (${c.cores.toFixed(2)}) / ${c.clientCpuUs.toFixed(2)}`;
      }),
    ]),
  ),
);
summarize(
  SIZES.flatMap((n) => {
    const nc = results.get(`netchan/${n}`);
    const h2 = results.get(`raw-h2/${n}`);
    if (!nc || !h2) return [];
    return [ratioRow(`cluster echo, ${n.toLocaleString('en')} clients, msg/s`, nc.rate, { label: 'raw HTTP/2, one stream per client', value: h2.rate }, (x) => `${rate(x)} msg/s`, { min: 0.9 })];
  }),
);
process.exit([...results.values()].some((c) => c.note) ? 1 : 0);
