/**
 * Shared channels on JetStream: the cluster echo (a server program sends tasks, every client
 * echoes each one back, the server program takes the echoes) in four set-ups, same run:
 *   2 servers, shared    tasks and echoes on shared channels, clients split over two netchan servers,
 *                        with `prefetch` 0 (a value is pulled when a receiver asks) and 16
 *   1 server, shared     the same on one netchan server (prefetch 16)
 *   1 server, local      the same on one netchan server with ordinary channels (no JetStream)
 *   JetStream alone      the same workload straight on JetStream: each client pulls a task, acks it
 *                        (double ack), publishes its echo; the producer publishes and waits for each
 *                        acknowledgement; the collector pulls echoes and acks them (the engine's limit
 *                        for this exchange)
 * A real nats-server (JetStream, file store) in its own process; netchan servers, clients and the
 * NATS clients in this one. BENCH_CLIENTS (default 8) clients spread over the servers; in every
 * set-up BENCH_LOOPS (default 4) task senders and as many echo collectors, spread over the servers
 * (a shared handle's sends go one at a time, and a receive loop takes one value per pull and
 * confirmed ack). BENCH_SECONDS (default 4) measured after 1 s of warm-up, BENCH_ROUNDS (default 3)
 * rounds, the order of the set-ups reversed every other round. Processed msg/s = (tasks sent +
 * echoes received) / seconds.
 *
 *   npm run bench:jetstream
 */
import { setMaxListeners } from 'node:events';
import os from 'node:os';
import { Channel, connect, createServer, jetstream, type ChannelLike, type JetStreamBackend, type NetchanServer, type Session, SharedChannel } from '../lib/index.js';
import { generateCertificates } from '../lib/transport/devcert.js';
import { startNatsServer } from '../examples/nats-server.js';

const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 8);
const LOOPS = Number(process.env.BENCH_LOOPS ?? 4);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 4);
const WARMUP_MS = 1000;
const CAPACITY = 256;
const task = (id: number) => ({ id, name: 'task', payload: 'hello world', ts: Date.now() });

/** Counts processed messages while `run` works; returns msg/s over the measured window. */
async function measure(run: (count: () => void, stop: AbortSignal) => Promise<void>): Promise<number> {
  let processed = 0;
  let counting = false;
  const stop = new AbortController();
  setMaxListeners(0, stop.signal);
  const done = run(() => { if (counting) processed++; }, stop.signal);
  await new Promise((r) => setTimeout(r, WARMUP_MS));
  counting = true;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, SECONDS * 1000));
  counting = false;
  const rate = processed / ((performance.now() - t0) / 1000);
  stop.abort();
  await done;
  return rate;
}

let cell = 0;
async function netchanEcho(natsUrl: string, servers: number, shared: boolean, prefetch = 0): Promise<number> {
  const certs = await generateCertificates({ hosts: ['localhost'] });
  const name = `bench${++cell}`;
  const backends: JetStreamBackend[] = [];
  const made: { server: NetchanServer; port: number; tasks: ChannelLike<unknown>; echoes: ChannelLike<unknown> }[] = [];
  for (let s = 0; s < servers; s++) {
    const server = createServer({ key: certs.key, cert: certs.cert });
    let tasks: ChannelLike<unknown>;
    let echoes: ChannelLike<unknown>;
    if (shared) {
      const backend = await jetstream({ servers: natsUrl, prefetch });
      backends.push(backend);
      const t = server.channel(`${name}.tasks`, CAPACITY, { backend }) as SharedChannel<unknown>;
      const e = server.channel(`${name}.echoes`, CAPACITY, { backend }) as SharedChannel<unknown>;
      await Promise.all([t.ready(), e.ready()]);
      tasks = t;
      echoes = e;
    } else {
      tasks = server.channel(`${name}.tasks`, new Channel(CAPACITY));
      echoes = server.channel(`${name}.echoes`, new Channel(CAPACITY));
    }
    const { port } = await server.listen(0, '127.0.0.1');
    made.push({ server, port, tasks, echoes });
  }
  // senders and collectors spread over the servers; on a shared channel each sender its own
  // handle (a handle's sends go one at a time)
  const producers: ChannelLike<unknown>[] = [];
  const collectors: ChannelLike<unknown>[] = [];
  for (let p = 0; p < LOOPS; p++) {
    const at = p % servers;
    producers.push(shared ? backends[at]!.channel(`${name}.tasks`, CAPACITY) : made[at]!.tasks);
    collectors.push(made[at]!.echoes);
  }
  await Promise.all(producers.map((p) => (p instanceof SharedChannel ? p.ready() : undefined)));
  const sessions: Session[] = [];
  for (let c = 0; c < CLIENTS; c++) sessions.push(await connect(`https://localhost:${made[c % servers]!.port}/`, { ca: certs.caCert }));
  const rate = await measure(async (count, stop) => {
    const clients = sessions.map(async (session) => {
      const tasks = session.channel(`${name}.tasks`);
      const echoes = session.channel(`${name}.echoes`);
      try {
        for (;;) await echoes.send(await tasks.receive({ signal: stop }), { signal: stop });
      } catch {
        // stopped
      }
    });
    let id = 0;
    const sending = producers.map(async (p) => {
      try {
        while (!stop.aborted) {
          await p.send(task(id++), { signal: stop });
          count();
        }
      } catch {
        // stopped
      }
    });
    const collecting = collectors.map(async (echoes) => {
      try {
        for (;;) {
          await echoes.receive({ signal: stop });
          count();
        }
      } catch {
        // stopped
      }
    });
    await Promise.all([...clients, ...sending, ...collecting]);
  });
  for (const s of sessions) await s.close().catch(() => undefined);
  for (const m of made) await m.server.close();
  for (const b of backends) {
    await b.remove(`${name}.tasks`);
    await b.remove(`${name}.echoes`);
    await b.close();
  }
  return rate;
}

async function jetstreamEcho(natsUrl: string): Promise<number> {
  const { connect: natsConnect } = await import('@nats-io/transport-node');
  const js = await import('@nats-io/jetstream');
  const { Codec } = await import('../lib/wire/codec.js');
  const codec = new Codec();
  const name = `RAW${++cell}`;
  const conns = await Promise.all(Array.from({ length: CLIENTS + 1 }, () => natsConnect({ servers: natsUrl })));
  const jsm = await js.jetstreamManager(conns[0]!);
  for (const s of ['T', 'E']) {
    await jsm.streams.add({ name: `${name}${s}`, subjects: [`${name}.${s}`], retention: js.RetentionPolicy.Workqueue, discard: js.DiscardPolicy.New, max_msgs: CAPACITY });
    await jsm.consumers.add(`${name}${s}`, { durable_name: 'c', ack_policy: js.AckPolicy.Explicit });
  }
  const rate = await measure(async (count, stop) => {
    const server = js.jetstream(conns[0]!);
    const clients = conns.slice(1).map(async (nc) => {
      const c = js.jetstream(nc);
      const consumer = await c.consumers.get(`${name}T`, 'c');
      while (!stop.aborted) {
        const m = await consumer.next({ expires: 1000 }).catch(() => null);
        if (!m) continue;
        await m.ackAck();
        const value = codec.decode(m.data);
        await c.publish(`${name}.E`, codec.encode(value)).catch(() => undefined);
      }
    });
    let id = 0;
    const sending = Array.from({ length: LOOPS }, async () => {
      while (!stop.aborted) {
        try {
          await server.publish(`${name}.T`, codec.encode(task(id++)));
          count();
        } catch {
          await new Promise((r) => setTimeout(r, 2));
        }
      }
    });
    const echoes = await server.consumers.get(`${name}E`, 'c');
    const collecting = Array.from({ length: LOOPS }, async () => {
      while (!stop.aborted) {
        const m = await echoes.next({ expires: 1000 }).catch(() => null);
        if (!m) continue;
        await m.ackAck();
        count();
      }
    });
    await Promise.all([...clients, ...sending, ...collecting]);
  });
  for (const s of ['T', 'E']) await jsm.streams.delete(`${name}${s}`);
  for (const nc of conns) await nc.close();
  return rate;
}

const nats = await startNatsServer();
try {
  const cells: [string, () => Promise<number>][] = [
    ['2 netchan servers, shared channels, prefetch 0', () => netchanEcho(nats.url, 2, true, 0)],
    ['2 netchan servers, shared channels, prefetch 16', () => netchanEcho(nats.url, 2, true, 16)],
    ['1 netchan server, shared channels, prefetch 16', () => netchanEcho(nats.url, 1, true, 16)],
    ['1 netchan server, local channels', () => netchanEcho(nats.url, 1, false)],
    ['JetStream alone, same exchange', () => jetstreamEcho(nats.url)],
  ];
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const results = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const [label, run] of r % 2 === 0 ? cells : [...cells].reverse()) {
      const rate = await run();
      results.set(label, [...(results.get(label) ?? []), rate]);
    }
  }
  console.log(`cluster echo on shared channels: ${CLIENTS} clients, ${LOOPS} task senders and ${LOOPS} echo collectors, capacity ${CAPACITY}, ${SECONDS} s x ${rounds} rounds; node ${process.version}, ${os.cpus().length} x ${os.cpus()[0]?.model}`);
  console.log('| set-up | processed msg/s (each round) |');
  console.log('|---|---|');
  for (const [label, rates] of results) console.log(`| ${label} | ${rates.map((r) => Math.round(r).toLocaleString('en-US')).join(' / ')} |`);
} finally {
  nats.stop();
}
