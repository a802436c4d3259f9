/**
 * `npm run demo`: the cluster example on loopback. One server sends tasks as fast as its
 * clients take them; each client echoes every task back. TLS 1.3 with the development
 * certificate `listen` creates (once) in a per-user directory.
 *
 *   npm run demo -- --clients 1000 --seconds 10
 *   npm run demo -- --servers 2                     # two servers sharing both channels on JetStream
 *   npm run demo -- --servers 3 --nats nats://127.0.0.1:4222
 *
 * With `--servers N` above 1 (or `--nats`), N servers listen with one JetStream `backend`
 * (docs/cluster.md): clients are spread over them, every server's program sends tasks and takes
 * echoes, and a task sent through one server may be echoed by a client of another. Without
 * `--nats` the demo starts its own `nats-server -js` (installed separately) in a temporary directory.
 *
 * Prints a live progress line, then a table: sent, received, processed msg/s, per client, lost.
 * It ends by itself: after `--seconds` the server stops sending, waits for the tasks still out
 * to come back, and counts as lost whatever did not.
 */
import { parseArgs } from 'node:util';
import { startNatsServer } from './nats-server.js';
import { CLUSTER_CHANNELS, devCertificateDir, dial, jetstream, listen, type ChannelLike, type Dialer, type JetStreamBackend, type Listener } from '../lib/index.js';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '10' },
    capacity: { type: 'string', default: '128' },
    servers: { type: 'string', default: '1' },
    nats: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log('usage: npm run demo -- [--clients N (50)] [--seconds S (10)] [--capacity C (128)] [--servers N (1)] [--nats URL]');
  process.exit(0);
}
const clientCount = positive('clients', args.clients);
const seconds = positive('seconds', args.seconds);
const capacity = positive('capacity', args.capacity);
const serverCount = positive('servers', args.servers);
const shared = serverCount > 1 || args.nats !== undefined;

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`demo: --${name} must be a positive integer, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

// ---- servers ----
let natsServer: { url: string; stop(): void } | null = null;
const backends: JetStreamBackend[] = [];
if (shared) {
  natsServer = args.nats
    ? { url: args.nats, stop() {} }
    : await startNatsServer().catch((err: Error) => {
        console.error(`demo: cannot start nats-server (${err.message}): install it (Debian: apt-get install nats-server) or pass --nats URL`);
        process.exit(2);
      });
  for (let i = 0; i < serverCount; i++) backends.push(await jetstream({ servers: natsServer.url, ackWaitMs: 5000 }));
  // a fresh pair of channels: what an earlier run left (values, a close) goes
  for (const name of Object.values(CLUSTER_CHANNELS)) await backends[0]!.remove(name).catch(() => undefined);
}
const servers: Listener<number, ChannelLike<number>>[] = [];
for (let i = 0; i < serverCount; i++) {
  servers.push(shared ? await listen<number>('127.0.0.1:0', { capacity, backend: backends[i]! }) : await listen<number>('127.0.0.1:0', { capacity }));
}
for (const server of servers) console.log(`server: ${server.url} (TLS 1.3, HTTP/2; development CA in ${devCertificateDir()})`);
if (natsServer) console.log(`shared channels: ${Object.values(CLUSTER_CHANNELS).join(', ')} on JetStream at ${natsServer.url}`);
let sent = 0;
let received = 0;
let sending = true;
const senders = servers.map(async (server) => {
  // a task is a number; it could be anything (on a server of its own: channels and byte streams included)
  while (sending) {
    await server.send.send(sent++);
  }
});
// every server's program takes echoes: with shared channels, of clients on any server
const receivers = servers.map(async (server) => {
  for await (const _ of server.receive) received++;
});

// ---- clients ----
const clients: Dialer<number>[] = [];
let connectFailures = 0;
const startedAt = Date.now();
await Promise.all(
  Array.from({ length: clientCount }, async (_, i) => {
    try {
      const c = await dial<number>(`127.0.0.1:${servers[i % servers.length]!.port}`);
      clients.push(c);
      void (async () => {
        for await (const task of c.receive) await c.send.send(task); // echo: the computed result
      })().catch(() => undefined);
    } catch (err) {
      connectFailures++;
      if (connectFailures === 1) console.error(`client failed to connect: ${(err as Error).message}`);
    }
  }),
);
console.log(`clients: ${clients.length} connected in ${Date.now() - startedAt} ms${connectFailures ? `, ${connectFailures} failed` : ''}`);

// ---- progress ----
const t0 = Date.now();
let last = { at: t0, sent: 0, received: 0 };
const tty = process.stdout.isTTY;
const progress = setInterval(() => {
  const now = Date.now();
  const dt = (now - last.at) / 1000;
  const line =
    `${((now - t0) / 1000).toFixed(0).padStart(3)} s  clients ${clients.length}  ` +
    `sent ${rate((sent - last.sent) / dt)}/s  received ${rate((received - last.received) / dt)}/s  ` +
    `in flight ${sent - received}  lost 0`;
  last = { at: now, sent, received };
  if (tty) process.stdout.write(`\r${line}   `);
  else console.log(line);
}, 1000);

await new Promise((r) => setTimeout(r, seconds * 1000));
sending = false;
const sendingStoppedAt = Date.now();
await Promise.all(senders);
// the tasks still out (in the channel, prefetched, in clients' hands) come back
const drainDeadline = Date.now() + 10_000;
while (received < sent && Date.now() < drainDeadline) await new Promise((r) => setTimeout(r, 10));
clearInterval(progress);
if (tty) process.stdout.write('\n');
const elapsed = (sendingStoppedAt - t0) / 1000;
const lost = sent - received;
const stats = servers.map((s) => s.server.stats());

const rows: [string, string, string, string][] = [
  ['sent', String(sent), rate(sent / elapsed), rate(sent / elapsed / clients.length)],
  ['received', String(received), rate(received / elapsed), rate(received / elapsed / clients.length)],
  ['processed', String(sent + received), rate((sent + received) / elapsed), ''],
  ['lost', String(lost), '', ''],
];
const where = shared ? `${serverCount} servers sharing the channels on JetStream` : 'one server';
console.log(`\n${clients.length} clients, ${where}, ${elapsed.toFixed(1)} s, capacity ${capacity}, Node ${process.versions.node}`);
console.log(table(['', 'messages', 'msg/s', 'msg/s per client'], rows));
for (const s of stats) console.log(`server: ${s.sessions} sessions, ${s.streams} streams, ${s.bytesIn} bytes in, ${s.bytesOut} bytes out`);

await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
if (shared) {
  // the channels are shared: closing one server's listener leaves them open, so close them here
  servers[0]!.receive.close();
  servers[0]!.send.close();
}
for (const server of servers) await server.close();
await Promise.all(receivers.map((r) => r.catch(() => undefined)));
for (const b of backends) await b.close();
natsServer?.stop();
console.log(lost === 0 ? 'demo finished: nothing lost' : `demo finished: ${lost} LOST`);
process.exit(lost === 0 && connectFailures === 0 ? 0 : 1);

function rate(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return n.toFixed(0);
}

function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
