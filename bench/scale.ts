/**
 * Scale benchmark: N concurrent clients on one netchan server on this machine,
 * and the server's memory per idle client.
 *
 *   npm run bench:scale                         # 10,000 clients in 10 processes
 *   npm run bench:scale -- --clients 2000 --procs 4
 *
 * The server (`listen`, TLS 1.3, HTTP/2) runs in its own process, the clients in `--procs`
 * others (`dial`, `--concurrency` dials at a time per process). Every client runs the cluster
 * echo loop (`for await (task of receive) send(task)`, as in the demo) and proves it is live:
 * the server sends tasks until it has echoes from N distinct clients. The server channels have
 * capacity 0 (`--capacity`), so each of the server's sends is a rendezvous with one waiting
 * client and every client gets one task in turn; with capacity C a client's receive prefetches
 * up to C tasks and the first clients would take everyone's.
 *
 * Memory: the server's process.memoryUsage() after a forced gc (--expose-gc), before any client
 * connects and again with all N connected, live and idle (each waiting in `receive`);
 * (after - before) / N per client. Also the clients' processes, per client. Then the same for
 * the transport alone (`--floor-clients`, default 3000; 0 skips it): idle bare TLS sockets, and
 * HTTP/2 sessions with `--floor-streams` idle streams each (default 2: what a `dial` client holds,
 * its session stream and one pair stream), the floor under netchan's figure.
 * Env: BENCH_CLIENTS, BENCH_PROCS, BENCH_CONCURRENCY, BENCH_CAPACITY, BENCH_TIMEOUT_S,
 * BENCH_FLOOR_CLIENTS, BENCH_FLOOR_STREAMS work too.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { generateCertificates } from '../lib/transport/devcert.js';
import { Child, killAll, table, type Message } from './children.js';
import { summarize } from './summary.js';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: process.env.BENCH_CLIENTS ?? '10000' },
    procs: { type: 'string', default: process.env.BENCH_PROCS ?? '10' },
    concurrency: { type: 'string', default: process.env.BENCH_CONCURRENCY ?? '32' },
    capacity: { type: 'string', default: process.env.BENCH_CAPACITY ?? '0' },
    'timeout-s': { type: 'string', default: process.env.BENCH_TIMEOUT_S ?? '420' },
    'floor-clients': { type: 'string', default: process.env.BENCH_FLOOR_CLIENTS ?? '3000' },
    'floor-streams': { type: 'string', default: process.env.BENCH_FLOOR_STREAMS ?? '2' },
  },
});
const N = Number(args.clients);
const PROCS = Math.min(Number(args.procs), N);
const CONCURRENCY = Number(args.concurrency);
const TIMEOUT_MS = Number(args['timeout-s']) * 1000;
const FLOOR_N = Math.min(N, Number(args['floor-clients']));
const FLOOR_STREAMS = Number(args['floor-streams']);
for (const [name, v] of [['clients', N], ['procs', PROCS], ['concurrency', CONCURRENCY], ['timeout-s', TIMEOUT_MS]] as const) {
  if (!Number.isInteger(v) || v < 1) {
    console.error(`bench:scale: --${name} must be a positive integer`);
    process.exit(2);
  }
}

// the whole run is bounded: past the deadline every child is killed and the run fails
const deadline = setTimeout(() => {
  console.error(`bench:scale: not done within ${TIMEOUT_MS / 1000} s; giving up`);
  killAll();
  process.exit(1);
}, TIMEOUT_MS);
deadline.unref();

type Mem = NodeJS.MemoryUsage;
const MB = (b: number) => (b / 1024 / 1024).toFixed(1);

const certs = await generateCertificates({ hosts: ['localhost', '127.0.0.1'] });
const env = { BENCH_KEY: certs.key, BENCH_CERT: certs.cert, BENCH_CA: certs.caCert, BENCH_CAPACITY: args.capacity!, BENCH_FLOOR_STREAMS: String(FLOOR_STREAMS) };
// run from the tsc build by `npm run bench:scale`, from source under tsx otherwise
const script = new URL(import.meta.url.endsWith('.ts') ? './scale-peer.ts' : './scale-peer.js', import.meta.url);

const server = new Child('server', script, ['server'], env);
const { port } = (await server.next('ready', 30_000)) as Message & { port: number };
// settle, then the baseline: the server listening, no client yet
await new Promise((r) => setTimeout(r, 500));
const before = ((await server.ask({ type: 'mem' }, 'mem', 30_000)) as Message & { mem: Mem }).mem;

const procs = Array.from({ length: PROCS }, (_, i) => new Child(`clients-${i}`, script, ['clients'], env));
await Promise.all(procs.map((p) => p.next('ready', 30_000)));
const clientBaseline = await Promise.all(procs.map(async (p) => ((await p.ask({ type: 'mem' }, 'mem', 30_000)) as Message & { mem: Mem }).mem));

const t0 = Date.now();
const per = Math.floor(N / PROCS);
const dialed = await Promise.all(
  procs.map((p, i) => {
    const count = i === PROCS - 1 ? N - per * (PROCS - 1) : per;
    return p.ask({ type: 'dial', port, first: i * per, count, concurrency: CONCURRENCY }, 'dialed', TIMEOUT_MS) as Promise<
      Message & { connected: number; failed: number; errors: [string, number][]; ms: number }
    >;
  }),
);
const connectMs = Date.now() - t0;
const connected = dialed.reduce((s, d) => s + d.connected, 0);
const failed = dialed.reduce((s, d) => s + d.failed, 0);
const errors = new Map<string, number>();
for (const d of dialed) for (const [m, n] of d.errors) errors.set(m, (errors.get(m) ?? 0) + n);

const live = (await server.ask({ type: 'go', expect: connected, timeoutMs: 60_000 }, 'live', 90_000)) as Message & {
  distinct: number;
  replies: number;
  sent: number;
  ms: number;
};
// idle: every client waits in receive; let the last writes and timers settle
await new Promise((r) => setTimeout(r, 2000));
const afterMsg = (await server.ask({ type: 'mem' }, 'mem', 60_000)) as Message & { mem: Mem; sessions: number; streams: number };
const after = afterMsg.mem;
const clientAfter = await Promise.all(procs.map(async (p) => (await p.ask({ type: 'mem' }, 'mem', 60_000)) as Message & { mem: Mem; alive: number }));
const alive = clientAfter.reduce((s, m) => s + m.alive, 0);

const perClient = (field: keyof Mem) => ((after[field] - before[field]) / Math.max(1, connected) / 1024).toFixed(1);
const clientRssDelta = clientAfter.reduce((s, m, i) => s + m.mem.rss - clientBaseline[i]!.rss, 0);
const clientHeapDelta = clientAfter.reduce((s, m, i) => s + m.mem.heapUsed - clientBaseline[i]!.heapUsed, 0);
await Promise.all([server, ...procs].map((c) => c.stop()));

/**
 * The transport's own share, for comparison: the same measurement with FLOOR_N idle bare TLS
 * sockets, then HTTP/2 sessions over TLS with FLOOR_STREAMS open idle streams each (netchan's server
 * settings), and no netchan.
 */
async function floor(kind: 'tls' | 'h2'): Promise<{ rss: string; heap: string; external: string }> {
  const srv = new Child(`floor ${kind} server`, script, ['floor-server', kind], env);
  const fprocs: Child[] = [];
  try {
    const { port: fport } = (await srv.next('ready', 30_000)) as Message & { port: number };
    await new Promise((r) => setTimeout(r, 500));
    const b = ((await srv.ask({ type: 'mem' }, 'mem', 30_000)) as Message & { mem: Mem }).mem;
    const n = Math.min(PROCS, FLOOR_N);
    for (let i = 0; i < n; i++) fprocs.push(new Child(`floor ${kind} clients-${i}`, script, ['floor-clients', kind], env));
    await Promise.all(fprocs.map((p) => p.next('ready', 30_000)));
    const each = Math.floor(FLOOR_N / n);
    const done = await Promise.all(
      fprocs.map(
        (p, i) => p.ask({ type: 'dial', port: fport, count: i === n - 1 ? FLOOR_N - each * (n - 1) : each, concurrency: CONCURRENCY }, 'dialed', TIMEOUT_MS) as Promise<Message & { connected: number }>,
      ),
    );
    const held = done.reduce((s, d) => s + d.connected, 0);
    await new Promise((r) => setTimeout(r, 2000));
    const a = ((await srv.ask({ type: 'mem' }, 'mem', 60_000)) as Message & { mem: Mem }).mem;
    const per = (field: keyof Mem) => ((a[field] - b[field]) / Math.max(1, held) / 1024).toFixed(1);
    return { rss: per('rss'), heap: per('heapUsed'), external: per('external') };
  } finally {
    await Promise.all([srv, ...fprocs].map((c) => c.stop()));
  }
}
const floors = FLOOR_N > 0 ? { tls: await floor('tls'), h2: await floor('h2') } : null;

console.log(`netchan scale benchmark — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB`);
console.log(`one server process, ${N} clients in ${PROCS} processes (${CONCURRENCY} dials at a time each), 127.0.0.1, TLS 1.3 + HTTP/2, channel capacity ${args.capacity}`);
console.log('');
console.log(
  table(
    ['clients', 'value'],
    [
      ['connected', `${connected} of ${N}${failed ? ` (${failed} failed)` : ''}`],
      ['time to connect all', `${(connectMs / 1000).toFixed(1)} s (${((connected / connectMs) * 1000).toFixed(0)} dials/s)`],
      ['live: distinct clients that echoed a task', `${live.distinct} (${live.sent} tasks sent, ${live.replies} echoes, ${(live.ms / 1000).toFixed(1)} s)`],
      ['sessions / streams on the server, idle', `${afterMsg.sessions} / ${afterMsg.streams}`],
      ['sessions still open in the client processes', String(alive)],
    ],
  ),
);
console.log('');
console.log(
  table(
    ['server memory (after gc)', 'before clients', `${connected} idle clients`, 'per idle client'],
    [
      ['RSS', `${MB(before.rss)} MB`, `${MB(after.rss)} MB`, `**${perClient('rss')} KB**`],
      ['JS heap used', `${MB(before.heapUsed)} MB`, `${MB(after.heapUsed)} MB`, `${perClient('heapUsed')} KB`],
      ['external (incl. ArrayBuffers)', `${MB(before.external)} MB`, `${MB(after.external)} MB`, `${perClient('external')} KB`],
    ],
  ),
);
if (floors) {
  console.log('');
  console.log(
    table(
      [`per idle connection on the server (after gc)`, 'RSS KB', 'JS heap KB', 'external KB'],
      [
        [`bare TLS 1.3 socket (Node tls, ${FLOOR_N} connections)`, floors.tls.rss, floors.tls.heap, floors.tls.external],
        [`HTTP/2 session over TLS + ${FLOOR_STREAMS} idle streams (Node http2, ${FLOOR_N} connections)`, floors.h2.rss, floors.h2.heap, floors.h2.external],
        [`netchan client: session + pair stream of the 2 cluster channels (${connected} clients)`, perClient('rss'), perClient('heapUsed'), perClient('external')],
      ],
    ),
  );
}
console.log('');
console.log(
  `client processes (${PROCS}): RSS ${((clientRssDelta / Math.max(1, connected)) / 1024).toFixed(1)} KB and JS heap ` +
    `${((clientHeapDelta / Math.max(1, connected)) / 1024).toFixed(1)} KB per client; target on the server: <= 64 KB per idle client`,
);
if (errors.size) {
  console.log('');
  console.log('dial errors:');
  for (const [m, n] of errors) console.log(`  ${n} × ${m}`);
}

{
  const rss = Number(perClient('rss'));
  const floorRss = floors ? Number(floors.h2.rss) : NaN;
  summarize([
    {
      workload: `idle \`dial\` clients, server RSS per client (${connected.toLocaleString('en')} clients)`,
      netchan: `${rss.toFixed(1)} KB`,
      reference: floors ? `HTTP/2 + TLS floor: ${floorRss.toFixed(1)} KB` : 'floor not measured',
      ratio: floors ? `+${(rss - floorRss).toFixed(1)} KB` : '',
      target: '≤ 64 KB, ≤ floor + 8 KB',
      met: rss <= 64 && (!floors || rss - floorRss <= 8),
    },
  ]);
}
killAll();
const ok = connected === N && live.distinct === N && afterMsg.sessions === N;
process.exit(ok ? 0 : 1);
