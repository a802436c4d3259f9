/**
 * Server side of bench/net.ts and bench/bytes.ts, run in its own process by bench/net-peer.ts:
 * `node --import tsx bench/net-server.ts <peer>`. Prints one JSON line `{port}` when listening;
 * exits when stdin closes. Certificates come from the environment (BENCH_KEY, BENCH_CERT as PEM).
 */
import http2 from 'node:http2';
import type { Duplex, Readable } from 'node:stream';
import tls from 'node:tls';
import { Packr } from 'msgpackr';
import { Codec } from '../lib/wire/codec.js';
import { FrameDecoder, FrameEncoder, FrameType } from '../lib/wire/frames.js';
import { createServer, type ChannelLike } from '../lib/index.js';
import { bulkSource, receiveAll, type Received } from './bulk-data.js';

const key = process.env.BENCH_KEY as string;
const cert = process.env.BENCH_CERT as string;
const peer = process.argv[2];
const packr = new Packr({ useRecords: false });
// The raw peers encode with netchan's own hardened codec ("the same codec"), or with plain
// msgpackr (BENCH_CODEC=msgpackr: no validation, the codec's own limit).
const netchanCodec = new Codec();
const codec =
  process.env.BENCH_CODEC === 'msgpackr'
    ? { encode: (v: unknown) => packr.pack(v), decode: (b: Uint8Array) => packr.unpack(b) as unknown }
    : { encode: (v: unknown) => netchanCodec.encode(v), decode: (b: Uint8Array) => netchanCodec.decode(b) };

function ready(port: number): void {
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));

/** Counts VALUE frames; a CREDIT frame {expect} asks for one VALUE with the count once it is reached. */
function countingSink(wire: Duplex): void {
  let received = 0;
  let expect = Infinity;
  const decoder = new FrameDecoder((type, payload) => {
    const value = codec.decode(payload) as { expect?: number };
    if (type === FrameType.CREDIT) expect = (value as { expect: number }).expect;
    else received++;
    if (received >= expect) {
      expect = Infinity;
      const enc = new FrameEncoder();
      enc.frame(FrameType.VALUE, codec.encode(received));
      wire.write(enc.take() as Buffer);
    }
  });
  wire.on('data', (chunk: Buffer) => decoder.push(chunk));
  wire.on('error', () => undefined);
}

if (peer === 'netchan') {
  const server = createServer({ key, cert });
  const sink = server.channel<unknown>('sink', 1024);
  const control = server.channel<{ expect: number; reply: ChannelLike<number> }>('control', 1);
  const ping = server.channel<unknown>('ping', 0);
  const pong = server.channel<unknown>('pong', 0);
  // the README's request/reply: each request carries a fresh reply channel, answered and dropped
  const square = server.channel<{ n: number; reply: ChannelLike<number> }>('square', 100);
  // byte streams inside values: an upload read to its end, a download sent in the answer
  const upload = server.channel<{ data: Readable; reply: ChannelLike<Received> }>('upload', 0);
  const download = server.channel<{ bytes: number; reply: ChannelLike<{ data: Readable }> }>('download', 0);
  let received = 0;
  const waiters: { expect: number; reply: ChannelLike<number> }[] = [];
  (async () => {
    for await (const _v of sink) {
      received++;
      for (let i = waiters.length - 1; i >= 0; i--) {
        const w = waiters[i]!;
        if (received >= w.expect) {
          waiters.splice(i, 1);
          await w.reply.send(received);
        }
      }
    }
  })();
  (async () => {
    for await (const req of control) {
      if (received >= req.expect) await req.reply.send(received);
      else waiters.push(req);
    }
  })();
  (async () => {
    for await (const v of ping) await pong.send(v);
  })();
  (async () => {
    for await (const { n, reply } of square) await reply.send(n * n);
  })();
  (async () => {
    for await (const { data, reply } of upload) await reply.send(await receiveAll(data as AsyncIterable<Buffer>));
  })();
  (async () => {
    for await (const { bytes, reply } of download) await reply.send({ data: bulkSource(bytes) });
  })();
  const { port } = await server.listen(0, '127.0.0.1');
  ready(port);
} else if (peer === 'raw-tls') {
  // the limit: TLS, the same codec and length-prefixed frames, no channel semantics
  const server = tls.createServer({ key, cert, minVersion: 'TLSv1.3' }, countingSink);
  server.listen(0, '127.0.0.1', () => ready((server.address() as { port: number }).port));
} else if (peer === 'raw-h2-sink') {
  // one-way over one raw HTTP/2 stream: the same frames and codec, HTTP/2's own flow control only
  const server = http2.createSecureServer({ key, cert, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024 } });
  server.on('session', (s) => s.once('remoteSettings', () => s.setLocalWindowSize(32 * 1024 * 1024)));
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    countingSink(stream);
  });
  server.listen(0, '127.0.0.1', () => ready((server.address() as { port: number }).port));
} else if (peer === 'raw-h2') {
  // raw HTTP/2 stream ping-pong: echo every frame on the same stream
  const server = http2.createSecureServer({ key, cert, minVersion: 'TLSv1.3' });
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    const decoder = new FrameDecoder((type, payload) => {
      const enc = new FrameEncoder(64);
      enc.frame(type, codec.encode(codec.decode(payload)));
      stream.write(enc.take() as Buffer);
    });
    stream.on('data', (chunk: Buffer) => decoder.push(chunk));
    stream.on('error', () => undefined);
  });
  server.listen(0, '127.0.0.1', () => ready((server.address() as { port: number }).port));
} else if (peer === 'raw-h2-bytes') {
  // bulk bytes on one raw HTTP/2 stream, netchan's windows: POST /up is read to its end and
  // answered with {bytes, crc}; GET /down answers with `bench-bytes` bytes
  const server = http2.createSecureServer({ key, cert, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024 } });
  server.on('session', (s) => s.once('remoteSettings', () => s.setLocalWindowSize(32 * 1024 * 1024)));
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    if (headers[':path'] === '/up') {
      void receiveAll(stream).then((got) => {
        stream.respond({ ':status': 200 });
        stream.end(JSON.stringify(got));
      });
    } else {
      stream.respond({ ':status': 200 });
      bulkSource(Number(headers['bench-bytes'])).pipe(stream);
    }
  });
  server.listen(0, '127.0.0.1', () => ready((server.address() as { port: number }).port));
} else {
  console.error(`unknown peer ${peer}`);
  process.exit(2);
}
