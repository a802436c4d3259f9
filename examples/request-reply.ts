/**
 * `npm run demo:request-reply`: a netchan server and client on loopback, TLS 1.3 with a development certificate
 * generated into certs/dev (once). The client squares numbers through a server channel, each
 * request carrying its own reply channel, then uploads a byte stream inside a value.
 * (The cluster demo, `npm run demo`, is examples/cluster.ts.)
 */
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { ensureDevCertificates } from '../lib/transport/devcert.js';
import { Channel, connect, createServer } from '../lib/index.js';

interface Square {
  n: number;
  reply: Channel<number>;
}
interface Upload {
  name: string;
  data: Readable;
}

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const certs = await ensureDevCertificates(path.join(root, 'certs', 'dev'));
console.log(`certificates: ${certs.dir} (${certs.created ? 'created' : 'reused'}), server fingerprint ${certs.fingerprint.slice(0, 23)}…`);

// ---- server ----
const server = createServer({ key: certs.key, cert: certs.cert });
const squares = server.channel<Square>('square', 16);
const uploads = server.channel<Upload>('uploads', 1);
const { port } = await server.listen(0, '127.0.0.1');
console.log(`server: https://localhost:${port}/ (TLS 1.3, HTTP/2)`);

void (async () => {
  for await (const { n, reply } of squares) {
    await reply.send(n * n);
    reply.close();
  }
})();
void (async () => {
  for await (const { name, data } of uploads) {
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of data as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    console.log(`server: received upload "${name}": ${bytes} bytes, sha256 ${hash.digest('hex').slice(0, 16)}…`);
  }
})();

// ---- client ----
const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert });
const square = session.channel<Square>('square');
const started = process.hrtime.bigint();
const results = await Promise.all(
  Array.from({ length: 1000 }, async (_, n) => {
    const reply = new Channel<number>();
    await square.send({ n, reply });
    return reply.receive();
  }),
);
const ms = Number(process.hrtime.bigint() - started) / 1e6;
const wrong = results.filter((r, n) => r !== n * n).length;
console.log(`client: 1000 requests, each with its own reply channel, in ${ms.toFixed(0)} ms; wrong answers: ${wrong}`);

const blob = randomBytes(8 * 1024 * 1024);
console.log(`client: uploading 8 MiB, sha256 ${createHash('sha256').update(blob).digest('hex').slice(0, 16)}…`);
await session.channel<Upload>('uploads').send({ name: 'blob.bin', data: Readable.from([blob]) });
while (server.stats().byteStreams > 0 || server.stats().valuesIn < 1001) await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 50));

console.log('server stats:', server.stats());
await session.close();
await server.close();
console.log(wrong === 0 ? 'demo finished' : 'demo finished with wrong answers');
process.exit(wrong === 0 ? 0 : 1);
