/**
 * TCP gateway benchmark: bulk throughput and request/response through a forwarded connection,
 * next to direct loopback TCP and to two plain Node TCP relays in a row (the architecture's floor
 * on one machine: the forwarder and the gateway are two relays too, plus TLS and HTTP/2), in one
 * run. Every endpoint is its own process: the target, each relay, the gateway, the forwarder;
 * the client is this process.
 *
 *   npm run bench:gateway            (BENCH_BULK_MIB, BENCH_ROUNDTRIPS, BENCH_RUNS to change the sizes)
 *
 * Bulk: the client writes BENCH_BULK_MIB MiB in 256 KiB writes; the target answers one byte once it
 * has them all; the time is from the first write to that byte. Request/response: 64-byte request,
 * 64-byte answer, one at a time. Best of BENCH_RUNS.
 *
 * pgbench -S: a throwaway PostgreSQL on loopback (test/helpers/postgres.ts; as root it runs as
 * the postgres user), `pgbench -S` with BENCH_PG_CLIENTS connections (default 4) for
 * BENCH_PG_SECONDS (default 10) directly, through the two plain relays and through
 * the raw HTTP/2 relay pair and `netchan forward` → `netchan gateway`, alternating, best of
 * BENCH_RUNS.
 * BENCH_PGBENCH=0 leaves it out; without PostgreSQL installed the row says so.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ratioRow, summarize, type SummaryRow } from './summary.js';

const BULK_BYTES = Number(process.env.BENCH_BULK_MIB ?? 512) * 1024 * 1024;
const ROUNDTRIPS = Number(process.env.BENCH_ROUNDTRIPS ?? 10_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const RR_SIZE = 64;

const role = process.argv[2];

/** Prints the port this role listens on, as the one line the parent waits for. */
function ready(port: number): void {
  process.stdout.write(`${JSON.stringify({ port })}\n`);
  // the parent ends the role by closing stdin
  process.stdin.resume();
  process.stdin.once('end', () => process.exit(0));
}

async function listenOn(server: net.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

// ---------------------------------------------------------------------------------------------
// roles (child processes)

/** Bulk: 'B' + u64 length, then the bytes; answers 1 byte at the end. Request/response: 'R', then 64-byte requests answered with 64 bytes. */
async function target(): Promise<void> {
  const server = net.createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => undefined);
    let mode: 'B' | 'R' | undefined;
    let expected = 0;
    let got = 0;
    let header = Buffer.alloc(0);
    const answer = Buffer.alloc(RR_SIZE, 2);
    socket.on('data', (chunk: Buffer) => {
      if (mode === undefined) {
        header = Buffer.concat([header, chunk]);
        if (header[0] === 0x52) {
          mode = 'R';
          chunk = header.subarray(1);
        } else if (header.length >= 9) {
          mode = 'B';
          expected = Number(header.readBigUInt64BE(1));
          chunk = header.subarray(9);
        } else return;
      }
      if (mode === 'B') {
        got += chunk.length;
        if (got >= expected) socket.write(Buffer.from([1]));
      } else {
        got += chunk.length;
        while (got >= RR_SIZE) {
          got -= RR_SIZE;
          socket.write(answer);
        }
      }
    });
  });
  ready(await listenOn(server));
}

/** A plain TCP relay: each connection piped to a new connection to the upstream port. */
async function relay(upstream: number): Promise<void> {
  const server = net.createServer({ noDelay: true }, (down) => {
    const up = net.connect({ host: '127.0.0.1', port: upstream, noDelay: true });
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
    down.pipe(up);
    up.pipe(down);
  });
  ready(await listenOn(server));
}

/** The TLS half of a TLS relay pair: TLS 1.3 in, plain TCP to the upstream port. */
async function tlsRelayIn(upstream: number): Promise<void> {
  const server = tls.createServer({ key: process.env.BENCH_KEY!, cert: process.env.BENCH_CERT!, minVersion: 'TLSv1.3' }, (down) => {
    down.setNoDelay(true);
    const up = net.connect({ host: '127.0.0.1', port: upstream, noDelay: true });
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
    down.pipe(up);
    up.pipe(down);
  });
  ready(await listenOn(server));
}

/** The other half: plain TCP in, TLS 1.3 to the upstream port. */
async function tlsRelayOut(upstream: number): Promise<void> {
  const server = net.createServer({ noDelay: true }, (down) => {
    const up = tls.connect({ host: '127.0.0.1', port: upstream, servername: 'localhost', ca: process.env.BENCH_CA!, minVersion: 'TLSv1.3' });
    up.setNoDelay(true);
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
    down.pipe(up);
    up.pipe(down);
  });
  ready(await listenOn(server));
}

/** Raw HTTP/2 tunnel, server half: each stream of a TLS HTTP/2 connection piped to a new TCP connection upstream. */
async function h2RelayIn(upstream: number): Promise<void> {
  const server = http2.createSecureServer({ key: process.env.BENCH_KEY!, cert: process.env.BENCH_CERT!, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024 } });
  server.on('session', (s) => s.once('remoteSettings', () => s.setLocalWindowSize(32 * 1024 * 1024)));
  server.on('stream', (stream) => {
    const up = net.connect({ host: '127.0.0.1', port: upstream, noDelay: true }, () => {
      stream.respond({ ':status': 200 });
      stream.pipe(up);
      up.pipe(stream);
    });
    stream.on('error', () => up.destroy());
    up.on('error', () => stream.destroy());
  });
  ready(await listenOn(server as unknown as net.Server));
}

/** Raw HTTP/2 tunnel, client half: each TCP connection becomes a stream of one TLS HTTP/2 connection. */
async function h2RelayOut(upstream: number): Promise<void> {
  const session = http2.connect(`https://localhost:${upstream}`, { ca: process.env.BENCH_CA!, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024 } });
  await new Promise((r) => session.once('connect', r));
  session.setLocalWindowSize(32 * 1024 * 1024);
  const server = net.createServer({ noDelay: true }, (down) => {
    const stream = session.request({ ':method': 'POST', ':path': '/' });
    down.on('error', () => stream.destroy());
    stream.on('error', () => down.destroy());
    down.pipe(stream);
    stream.pipe(down);
  });
  ready(await listenOn(server));
}

async function gatewayRole(targetPorts: number[]): Promise<void> {
  const { createGateway, createServer } = await import('../lib/index.js');
  const server = createServer({ key: process.env.BENCH_KEY!, cert: process.env.BENCH_CERT!, authenticate: ({ headers }) => (headers.authorization === 'Bearer bench' ? 'bench' : false) });
  createGateway(server, { allow: targetPorts.map((port) => `127.0.0.1:${port}`) });
  const { port } = await server.listen(0, '127.0.0.1');
  ready(port);
}

async function forwardRole(gatewayPort: number, targetPort: number, transport: 'h2' | 'ws'): Promise<void> {
  const { connect } = await import('../lib/index.js');
  const session = await connect(`https://localhost:${gatewayPort}/`, { ca: process.env.BENCH_CA!, token: 'bench', transport });
  const fw = await session.forward({ target: `127.0.0.1:${targetPort}` });
  ready(fw.address.port);
}

// ---------------------------------------------------------------------------------------------
// the client (this process)

function spawnRole(...args: string[]): Promise<{ port: number; child: ChildProcess }> {
  // BENCH_CPU_PROF_DIR: each role writes a CPU profile there when it ends
  const prof = process.env.BENCH_CPU_PROF_DIR ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_CPU_PROF_DIR] : [];
  const child = spawn(process.execPath, [...prof, '--import', 'tsx', fileURLToPath(import.meta.url), ...args], { env: process.env, stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = createInterface({ input: child.stdout! });
  return new Promise((resolve, reject) => {
    rl.once('line', (line) => resolve({ port: (JSON.parse(line) as { port: number }).port, child }));
    child.once('exit', (code) => reject(new Error(`${args[0]} exited with ${code}`)));
  });
}

function connectTo(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Bulk upload over `socket`; returns bytes per second. */
async function bulk(socket: net.Socket, bytes: number): Promise<number> {
  const header = Buffer.alloc(9);
  header[0] = 0x42;
  header.writeBigUInt64BE(BigInt(bytes), 1);
  const chunk = Buffer.alloc(256 * 1024, 7);
  const done = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  const start = process.hrtime.bigint();
  socket.write(header);
  let left = bytes;
  while (left > 0) {
    const piece = left >= chunk.length ? chunk : chunk.subarray(0, left);
    left -= piece.length;
    if (!socket.write(piece)) await new Promise((r) => socket.once('drain', r));
  }
  await done;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return bytes / seconds;
}

/** Request/response over `socket`; returns microseconds per round trip. */
async function roundTrips(socket: net.Socket, n: number): Promise<number> {
  socket.write(Buffer.from([0x52]));
  const request = Buffer.alloc(RR_SIZE, 3);
  let got = 0;
  let resolveOne: () => void = () => undefined;
  socket.on('data', (c: Buffer) => {
    got += c.length;
    if (got >= RR_SIZE) {
      got -= RR_SIZE;
      resolveOne();
    }
  });
  const once = () => new Promise<void>((r) => (resolveOne = r));
  for (let i = 0; i < 200; i++) {
    const p = once();
    socket.write(request);
    await p;
  }
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const p = once();
    socket.write(request);
    await p;
  }
  return Number(process.hrtime.bigint() - start) / 1e3 / n;
}

/** One bulk upload and one round-trip run through `port`, each on a connection of its own. */
async function measureOnce(port: number): Promise<{ bulk: number; rtt: number }> {
  const s = await connectTo(port);
  const rate = await bulk(s, BULK_BYTES);
  s.destroy();
  const r = await connectTo(port);
  const rtt = await roundTrips(r, ROUNDTRIPS);
  r.destroy();
  return { bulk: rate, rtt };
}

const PGBENCH = process.env.BENCH_PGBENCH !== '0';
const PG_CLIENTS = Number(process.env.BENCH_PG_CLIENTS ?? 4);
const PG_SECONDS = Number(process.env.BENCH_PG_SECONDS ?? 10);
const run = promisify(execFile);

/** `pgbench` of the installed PostgreSQL, if any. */
async function pgbenchPath(): Promise<string | undefined> {
  const { postgresBinDir } = await import('../test/helpers/postgres.js');
  const bin = postgresBinDir();
  return bin ? path.join(bin, 'pgbench') : undefined;
}

/** `pgbench -S` through `port` for PG_SECONDS: transactions per second. */
async function pgbench(pgbenchBin: string, port: number): Promise<number> {
  const args = ['-S', '-n', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-c', String(PG_CLIENTS), '-j', String(Math.min(PG_CLIENTS, 2)), '-T', String(PG_SECONDS), 'postgres'];
  const { stdout } = await run(pgbenchBin, args, { timeout: (PG_SECONDS + 60) * 1000 });
  const tps = /tps = ([\d.]+)/.exec(stdout);
  if (!tps) throw new Error(`pgbench printed no tps:\n${stdout}`);
  return Number(tps[1]);
}

async function main(): Promise<void> {
  const { generateCertificates } = await import('../lib/transport/devcert.js');
  const certs = await generateCertificates({ hosts: ['localhost', '127.0.0.1'] });
  Object.assign(process.env, { BENCH_KEY: certs.key, BENCH_CERT: certs.cert, BENCH_CA: certs.caCert });
  const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  console.log(`node ${process.version}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, load average at start: ${load()}`);
  console.log(`bulk ${BULK_BYTES / 1024 / 1024} MiB upload, ${ROUNDTRIPS} round trips of ${RR_SIZE} bytes, best of ${RUNS} (range in brackets), the paths alternating\n`);
  const children: ChildProcess[] = [];
  const start = async (...args: string[]) => {
    const r = await spawnRole(...args);
    children.push(r.child);
    return r.port;
  };
  const pgbenchBin = PGBENCH ? await pgbenchPath() : undefined;
  const postgres = pgbenchBin ? await (await import('../test/helpers/postgres.js')).startPostgres() : undefined;
  const summary: SummaryRow[] = [];
  try {
    const targetPort = await start('target');
    const relay2 = await start('relay', String(targetPort));
    const relay1 = await start('relay', String(relay2));
    const tlsIn = await start('tls-relay-in', String(targetPort));
    const tlsOut = await start('tls-relay-out', String(tlsIn));
    const h2In = await start('h2-relay-in', String(targetPort));
    const h2Out = await start('h2-relay-out', String(h2In));
    const gateway = await start('gateway', String(targetPort), ...(postgres ? [String(postgres.port)] : []));
    const forwardH2 = await start('forward', String(gateway), String(targetPort), 'h2');
    const forwardWs = await start('forward', String(gateway), String(targetPort), 'ws');
    const rows: [string, number][] = [
      ['direct loopback TCP', targetPort],
      ['two plain Node TCP relays in a row', relay1],
      ['two Node relays, TLS 1.3 between them', tlsOut],
      ['two Node relays, one raw HTTP/2 stream (TLS 1.3) between them', h2Out],
      ['netchan forward -> gateway (HTTP/2, TLS 1.3)', forwardH2],
      ['netchan forward -> gateway (WebSocket fallback, TLS 1.3)', forwardWs],
    ];
    // BENCH_ROWS: a pattern picking rows (the plain relays stay: the ratios are to them)
    const only = process.env.BENCH_ROWS ? new RegExp(process.env.BENCH_ROWS) : undefined;
    const picked = rows.filter(([name, port]) => !only || only.test(name) || port === relay1);
    const runs = new Map<string, { bulk: number[]; rtt: number[] }>(picked.map(([name]) => [name, { bulk: [], rtt: [] }]));
    for (let r = 0; r < RUNS; r++) {
      for (const [name, port] of r % 2 === 0 ? picked : [...picked].reverse()) {
        const m = await measureOnce(port);
        runs.get(name)!.bulk.push(m.bulk);
        runs.get(name)!.rtt.push(m.rtt);
        console.log(`  run ${r + 1}, ${name}: ${(m.bulk / 1e9).toFixed(3)} GB/s, ${m.rtt.toFixed(1)} µs`);
      }
    }
    const results = picked.map(([name]) => {
      const { bulk, rtt } = runs.get(name)!;
      return { name, bulk: Math.max(...bulk), rtt: Math.min(...rtt), bulkRange: `${(Math.min(...bulk) / 1e9).toFixed(3)}–${(Math.max(...bulk) / 1e9).toFixed(3)}` };
    });
    const relays = results.find((r) => r.name.startsWith('two plain'))!;
    console.log('\n| path | bulk GB/s | × two relays | round trip µs | × two relays |');
    console.log('|---|---:|---:|---:|---:|');
    for (const r of results) {
      console.log(`| ${r.name} | ${(r.bulk / 1e9).toFixed(3)} (${r.bulkRange}) | ${(r.bulk / relays.bulk).toFixed(2)} | ${r.rtt.toFixed(1)} | ${(r.rtt / relays.rtt).toFixed(2)} |`);
    }
    const rawH2 = results.find((r) => r.name.includes('raw HTTP/2'));
    const netchanH2 = results.find((r) => r.name.includes('netchan forward -> gateway (HTTP/2'));
    if (rawH2 && netchanH2) {
      console.log(`\nnetchan forward -> gateway: ${(netchanH2.bulk / rawH2.bulk).toFixed(2)} × the raw HTTP/2 relay pair in bulk (target ≥ 0.9 ×)`);
      const gbs = (n: number) => `${(n / 1e9).toFixed(3)} GB/s`;
      summary.push(ratioRow(`TCP gateway bulk, ${BULK_BYTES / 1024 / 1024} MiB upload`, netchanH2.bulk, { label: 'raw HTTP/2 relay pair', value: rawH2.bulk }, gbs, { min: 0.9 }));
    }

    if (!PGBENCH) return;
    if (!pgbenchBin || !postgres) {
      console.log('\npgbench -S: PostgreSQL is not installed (Debian: apt-get install postgresql)');
      summary.push({ workload: 'TCP gateway, pgbench -S', netchan: 'not measured', reference: 'PostgreSQL not installed', ratio: '-', target: '≥ 0.8 ×' });
      return;
    }
    await run(pgbenchBin, ['-i', '-q', '-h', '127.0.0.1', '-p', String(postgres.port), '-U', 'postgres', 'postgres'], { timeout: 120_000 });
    const pgRelay2 = await start('relay', String(postgres.port));
    const pgRelay1 = await start('relay', String(pgRelay2));
    const pgH2In = await start('h2-relay-in', String(postgres.port));
    const pgH2Out = await start('h2-relay-out', String(pgH2In));
    const pgForward = await start('forward', String(gateway), String(postgres.port), 'h2');
    const pgRows: [string, number][] = [
      ['direct loopback TCP', postgres.port],
      ['two plain Node TCP relays in a row', pgRelay1],
      ['two Node relays, one raw HTTP/2 stream (TLS 1.3) between them', pgH2Out],
      ['netchan forward -> gateway (HTTP/2, TLS 1.3)', pgForward],
    ];
    const tps = new Map<string, number[]>(pgRows.map(([name]) => [name, []]));
    for (let r = 0; r < RUNS; r++) {
      for (const [name, port] of r % 2 === 0 ? pgRows : [...pgRows].reverse()) {
        const t = await pgbench(pgbenchBin, port);
        tps.get(name)!.push(t);
        console.log(`  run ${r + 1}, pgbench -S, ${name}: ${t.toFixed(0)} tps`);
      }
    }
    const plain = Math.max(...tps.get(pgRows[1]![0])!);
    console.log(`\npgbench -S, ${PG_CLIENTS} connections, ${PG_SECONDS} s per run\n`);
    console.log('| path | tps | × two relays |');
    console.log('|---|---:|---:|');
    for (const [name] of pgRows) {
      const t = tps.get(name)!;
      console.log(`| ${name} | ${Math.max(...t).toFixed(0)} (${Math.min(...t).toFixed(0)}–${Math.max(...t).toFixed(0)}) | ${(Math.max(...t) / plain).toFixed(2)} |`);
    }
    const netchanTps = Math.max(...tps.get(pgRows[3]![0])!);
    summary.push(ratioRow(`TCP gateway, pgbench -S, ${PG_CLIENTS} connections`, netchanTps, { label: 'two plain Node TCP relays', value: plain }, (n) => `${n.toFixed(0)} tps`, { min: 0.8 }));
  } finally {
    for (const c of children) c.stdin?.end();
    await postgres?.stop();
    summarize(summary);
    console.log(`\nload average at the end: ${load()}`);
  }
}

if (role === 'target') await target();
else if (role === 'relay') await relay(Number(process.argv[3]));
else if (role === 'tls-relay-in') await tlsRelayIn(Number(process.argv[3]));
else if (role === 'tls-relay-out') await tlsRelayOut(Number(process.argv[3]));
else if (role === 'h2-relay-in') await h2RelayIn(Number(process.argv[3]));
else if (role === 'h2-relay-out') await h2RelayOut(Number(process.argv[3]));
else if (role === 'gateway') await gatewayRole(process.argv.slice(3).map(Number));
else if (role === 'forward') await forwardRole(Number(process.argv[3]), Number(process.argv[4]), process.argv[5] as 'h2' | 'ws');
else await main();
