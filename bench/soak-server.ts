/**
 * Server side of bench/soak.ts, forked with an IPC channel and `--expose-gc`: the README's
 * request/reply server, which never closes or releases the reply channels it is sent. Sends
 * `{port}` when listening; answers `'sample'` with its counters after a full collection.
 * Certificates come from the environment (SOAK_KEY, SOAK_CERT as PEM).
 */
import type { Readable } from 'node:stream';
import { createServer, type Channel } from '../lib/index.js';
import { settledSample } from './soak-sample.js';

interface Request {
  n: number;
  reply: Channel<number>;
  data?: Readable;
}

const server = createServer({ key: process.env.SOAK_KEY as string, cert: process.env.SOAK_CERT as string });
const requests = server.channel<Request>('square', 64);
const { port } = await server.listen(0, '127.0.0.1');

async function answer({ n, reply, data }: Request): Promise<void> {
  let bytes = 0;
  if (data) for await (const chunk of data as AsyncIterable<Buffer>) bytes += chunk.length;
  await reply.send(n * n + bytes);
}

// The README's server, a few requests at a time: it sends the answer and drops the handle. Each
// request is taken and answered in a call of its own, whose frame is gone once it returns: a loop
// variable (even one set to undefined after use: the suspended frame's registers) could hold the
// last request of each loop, the program holding it, which is not what is measured here.
async function serveOne(): Promise<void> {
  const request = await requests.receive();
  await answer(request).catch(() => undefined);
}
async function serve(): Promise<void> {
  for (;;) await serveOne();
}
for (let i = 0; i < 16; i++) void serve().catch(() => undefined);

process.on('message', (message) => {
  if (message === 'sample') void settledSample(() => server.stats()).then((sample) => process.send?.(sample));
  if (message === 'exit') void server.close().then(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
process.send?.({ port });
