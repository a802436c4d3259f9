/**
 * Many clients each send the server a timestamp every 500 ms, and the server answers each on the
 * reply channel that came inside the request, so every answer reaches the client that asked
 * (an echo into the shared channel could reach any client).
 *
 *   npx tsx examples/multi-client.ts [--clients 10] [--seconds 3]
 */
import { parseArgs } from 'node:util';
import { Channel, dial, listen } from '../lib/index.js';

interface Ping {
  sentAt: number;
  client: number;
  reply: Channel<{ sentAt: number; serverAt: number }>;
}

const { values: args } = parseArgs({ options: { clients: { type: 'string', default: '10' }, seconds: { type: 'string', default: '3' } } });
const clientCount = Number(args.clients);
const seconds = Number(args.seconds);

const server = await listen<Ping>('127.0.0.1:0');
void (async () => {
  for await (const { sentAt, reply } of server.receive) {
    await reply.send({ sentAt, serverAt: Date.now() });
    reply.close();
  }
})();

let answers = 0;
let wrong = 0;
const until = Date.now() + seconds * 1000;
await Promise.all(
  Array.from({ length: clientCount }, async (_, client) => {
    const c = await dial<Ping>(`127.0.0.1:${server.port}`);
    while (Date.now() < until) {
      const reply = new Channel<{ sentAt: number; serverAt: number }>();
      const sentAt = Date.now();
      await c.send.send({ sentAt, client, reply });
      const answer = await reply.receive();
      if (answer.sentAt !== sentAt) wrong++;
      answers++;
      if (client === 0) console.log(`client 0: round trip ${Date.now() - sentAt} ms`);
      await new Promise((r) => setTimeout(r, 500));
    }
    await c.close();
  }),
);
console.log(`${clientCount} clients, ${answers} answers, each to the client that asked: ${wrong === 0 ? 'yes' : `no (${wrong} wrong)`}`);
await server.close();
process.exit(wrong === 0 && answers > 0 ? 0 : 1);
