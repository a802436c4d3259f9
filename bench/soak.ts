/**
 * Soak: on one session, request/replies in the README's pattern (a fresh reply channel in each
 * request; the server sends its answer and drops the handle, never closing or releasing it), and
 * every 10th request also carries a small byte stream. The server runs in its own process
 * (bench/soak-server.ts). Every 100,000 requests both sides are sampled after a full collection:
 * streams, channel streams, byte streams, pending references, RSS and heap used. They must stay
 * flat. Stops at the time cap and says how far it got.
 * Run: npm run bench:soak   (SOAK_REQUESTS, SOAK_EVERY, SOAK_MINUTES, SOAK_TRANSPORT to change it)
 */
import { fork } from 'node:child_process';
import os from 'node:os';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { generateCertificates } from '../lib/transport/devcert.js';
import { Channel, connect } from '../lib/index.js';
import { settledSample, type Sample } from './soak-sample.js';

export interface SoakOptions {
  /** Request/replies to make. */
  requests: number;
  /** Sample both sides after every this many. */
  sampleEvery: number;
  /** Every this many-th request carries a byte stream. Default 10. */
  bytesEvery?: number;
  /** Requests in flight at once. Default 32. */
  concurrency?: number;
  /** Stop after this long (then sample once more). Default 10 minutes. */
  timeLimitMs?: number;
  transport?: 'h2' | 'ws';
  /** Called with each row as it is sampled. */
  onRow?: (row: SoakRow) => void;
}

export interface SoakRow {
  requests: number;
  seconds: number;
  server: Sample;
  client: Sample;
}

export interface SoakResult {
  rows: SoakRow[];
  completed: number;
  timedOut: boolean;
}

interface Request {
  n: number;
  reply: Channel<number>;
  data?: Readable;
}

const BYTES = Buffer.alloc(256, 7);

export async function soak(options: SoakOptions): Promise<SoakResult> {
  const { requests, sampleEvery, bytesEvery = 10, concurrency = 32, timeLimitMs = 10 * 60_000 } = options;
  const certs = await generateCertificates({ hosts: ['localhost', '127.0.0.1'] });
  const child = fork(fileURLToPath(new URL('./soak-server.ts', import.meta.url)), [], {
    execArgv: ['--expose-gc', '--import', 'tsx'],
    env: { ...process.env, SOAK_KEY: certs.key, SOAK_CERT: certs.cert },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = <T>(): Promise<T> =>
    new Promise((resolve, reject) => {
      const onExit = (code: number | null) => reject(new Error(`soak server exited with ${code}`));
      child.once('exit', onExit);
      child.once('message', (m) => {
        child.off('exit', onExit);
        resolve(m as T);
      });
    });
  const { port } = await next<{ port: number }>();
  const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert, transport: options.transport ?? 'h2' });
  const square = session.channel<Request>('square');
  const started = Date.now();
  const deadline = started + timeLimitMs;
  const rows: SoakRow[] = [];
  let done = 0;
  let timedOut = false;

  const sample = async (): Promise<void> => {
    child.send('sample');
    const server = await next<Sample>();
    const client = await settledSample(() => session.stats());
    const row = { requests: done, seconds: Math.round((Date.now() - started) / 100) / 10, server, client };
    rows.push(row);
    options.onRow?.(row);
  };

  const one = async (n: number): Promise<void> => {
    const reply = new Channel<number>();
    const data = n % bytesEvery === 0 ? Readable.from([BYTES]) : undefined;
    await square.send(data ? { n, reply, data } : { n, reply });
    const answer = await reply.receive();
    if (answer !== n * n + (data ? BYTES.length : 0)) throw new Error(`request ${n}: wrong answer ${answer}`);
  };

  try {
    await sample();
    while (done < requests && !timedOut) {
      const end = Math.min(requests, done + sampleEvery);
      let issued = done;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (issued < end) {
            if (Date.now() > deadline) {
              timedOut = true;
              return;
            }
            await one(issued++);
            done++;
          }
        }),
      );
      await sample();
    }
  } finally {
    await session.close();
    child.send('exit');
    await new Promise((r) => child.once('exit', r));
  }
  return { rows, completed: done, timedOut };
}

function table(rows: SoakRow[]): string {
  const side = (s: Sample) => `${s.streams} | ${s.channels} | ${s.byteStreams} | ${s.pendingReferences} | ${s.rssMB} | ${s.heapUsedMB}`;
  return [
    '| requests | s | server streams | channels | byte streams | pending refs | RSS MB | heap MB | client streams | channels | byte streams | pending refs | RSS MB | heap MB |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.requests} | ${r.seconds} | ${side(r.server)} | ${side(r.client)} |`),
  ].join('\n');
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const requests = Number(process.env.SOAK_REQUESTS ?? 1_000_000);
  const minutes = Number(process.env.SOAK_MINUTES ?? 10);
  const transport = (process.env.SOAK_TRANSPORT ?? 'h2') as 'h2' | 'ws';
  console.log(`netchan soak — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${transport}, ${requests} request/replies (reply channel each, byte stream every 10th), cap ${minutes} min`);
  const result = await soak({
    requests,
    sampleEvery: Number(process.env.SOAK_EVERY ?? 100_000),
    timeLimitMs: minutes * 60_000,
    transport,
    onRow: (r) => console.log(`${r.requests} requests, ${r.seconds} s: server ${JSON.stringify(r.server)} client ${JSON.stringify(r.client)}`),
  });
  console.log(table(result.rows));
  console.log(result.timedOut ? `stopped at the time cap after ${result.completed} of ${requests} request/replies` : `completed ${result.completed} request/replies`);
  process.exit(0);
}
