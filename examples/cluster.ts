/**
 * `npm run demo`: the cluster example on loopback. One server sends tasks as fast as its
 * clients take them; each client echoes every task back. TLS 1.3 with the development
 * certificate `listen` creates (once) in a per-user directory.
 *
 *   npm run demo -- --clients 1000 --seconds 10
 *
 * Prints a live progress line, then a table: sent, received, processed msg/s, per client, lost.
 * It ends by itself: after `--seconds` the server stops sending, waits for the tasks still out
 * to come back, and counts as lost whatever did not.
 */
import { parseArgs } from 'node:util';
import { devCertificateDir, dial, listen, type Dialer } from '../lib/index.js';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '50' },
    seconds: { type: 'string', default: '10' },
    capacity: { type: 'string', default: '128' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (args.help) {
  console.log('usage: npm run demo -- [--clients N (50)] [--seconds S (10)] [--capacity C (128)]');
  process.exit(0);
}
const clientCount = positive('clients', args.clients);
const seconds = positive('seconds', args.seconds);
const capacity = positive('capacity', args.capacity);

function positive(name: string, text: string | undefined): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`demo: --${name} must be a positive integer, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}

// ---- server ----
const server = await listen<number>('127.0.0.1:0', { capacity });
console.log(`server: ${server.url} (TLS 1.3, HTTP/2; development CA in ${devCertificateDir()})`);
let sent = 0;
let received = 0;
let sending = true;
const sender = (async () => {
  // a task is a number; it could be anything, channels and byte streams included
  while (sending) {
    await server.send.send(sent);
    sent++;
  }
})();
const receiver = (async () => {
  for await (const _ of server.receive) received++;
})();

// ---- clients ----
const clients: Dialer<number>[] = [];
let connectFailures = 0;
const startedAt = Date.now();
await Promise.all(
  Array.from({ length: clientCount }, async () => {
    try {
      const c = await dial<number>(`127.0.0.1:${server.port}`);
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
await sender;
// the tasks still out (in the channel, prefetched, in clients' hands) come back
const drainDeadline = Date.now() + 10_000;
while (received < sent && Date.now() < drainDeadline) await new Promise((r) => setTimeout(r, 10));
clearInterval(progress);
if (tty) process.stdout.write('\n');
const elapsed = (sendingStoppedAt - t0) / 1000;
const lost = sent - received;
const stats = server.server.stats();

const rows: [string, string, string, string][] = [
  ['sent', String(sent), rate(sent / elapsed), rate(sent / elapsed / clients.length)],
  ['received', String(received), rate(received / elapsed), rate(received / elapsed / clients.length)],
  ['processed', String(sent + received), rate((sent + received) / elapsed), ''],
  ['lost', String(lost), '', ''],
];
console.log(`\n${clients.length} clients, ${elapsed.toFixed(1)} s, capacity ${capacity}, Node ${process.versions.node}`);
console.log(table(['', 'messages', 'msg/s', 'msg/s per client'], rows));
console.log(`server: ${stats.sessions} sessions, ${stats.streams} streams, ${stats.bytesIn} bytes in, ${stats.bytesOut} bytes out`);

await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
await server.close();
await receiver.catch(() => undefined);
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
