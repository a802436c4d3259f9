/**
 * The end proof of byte streams (docs/PROTOCOL.md §6.2): the frame decoder against the vectors of
 * §6.3, and peers that end a byte stream short (without the proof, inside a frame, or with a
 * count that differs) over HTTP/2 and over the WebSocket fallback, in both directions.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { Duplex, PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { expect } from 'chai';
import { WebSocketServer } from 'ws';
import { ByteFrameDecoder, bytesEnd, bytesHeader, frameBytes } from '../lib/wire/byte-frames.js';
import { FrameType, encodeFrame } from '../lib/wire/frames.js';
import { connect, type NetchanServer } from '../lib/index.js';
import { openTransport } from '../lib/transport/connect.js';
import type { ServerWireStream, WireResponse } from '../lib/transport/contract.js';
import { Http2ServerStream } from '../lib/transport/http2.js';
import { MUX_MAX_MESSAGE, WS_SUBPROTOCOL, WsMux } from '../lib/transport/ws-mux.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, type Started } from './helpers/net.js';
import { digestOf } from './helpers/streams.js';

interface StreamVector {
  name: string;
  input: string;
  output: string;
  error: string | null;
  at?: 'push' | 'end';
}
const vectors = JSON.parse(readFileSync(new URL('./vectors/bytes.json', import.meta.url), 'utf8')) as { streams: StreamVector[] };

/** Feeds `pieces` to a decoder, then ends it: what came out, and how it failed. */
function decode(pieces: Buffer[]): { output: string; error: string | null; at?: 'push' | 'end' } {
  const decoder = new ByteFrameDecoder();
  const out: Buffer[] = [];
  const result = (error: string | null, at?: 'push' | 'end') => ({ output: Buffer.concat(out).toString('hex'), error, ...(at ? { at } : {}) });
  for (const piece of pieces) {
    try {
      decoder.push(piece, (p) => out.push(Buffer.from(p)));
    } catch (err) {
      return result((err as { code: string }).code, 'push');
    }
  }
  try {
    decoder.end();
  } catch (err) {
    return result((err as { code: string }).code, 'end');
  }
  return result(null);
}

function expected(v: StreamVector): { output: string; error: string | null; at?: 'push' | 'end' } {
  return { output: v.output, error: v.error, ...(v.at ? { at: v.at } : {}) };
}

describe('byte-stream end proof: frames (docs/PROTOCOL.md §6.2, §6.3)', () => {
  for (const v of vectors.streams) {
    it(`vector: ${v.name}`, () => {
      const input = Buffer.from(v.input, 'hex');
      expect(decode([input]), 'whole').to.deep.equal(expected(v));
      for (let cut = 1; cut < input.length; cut++) {
        expect(decode([input.subarray(0, cut), input.subarray(cut)]), `split at ${cut}`).to.deep.equal(expected(v));
      }
      const bytes = [...input].map((b) => Buffer.from([b]));
      expect(decode(bytes), 'byte by byte').to.deep.equal(expected(v));
    });
  }

  it('the encoder writes the vectors that end cleanly (one BYTES frame per write, then BYTES_END)', () => {
    const writes: Record<string, string[]> = {
      '"hello" in one frame, then its proof': ['hello'],
      'an empty direction: only the proof of 0': [],
      '"he" and "llo" in two frames, proof of 5': ['he', 'llo'],
    };
    for (const [name, chunks] of Object.entries(writes)) {
      const v = vectors.streams.find((s) => s.name === name)!;
      const frames: Buffer[] = [];
      for (const c of chunks) frameBytes(Buffer.from(c), frames);
      frames.push(bytesEnd(chunks.join('').length));
      expect(Buffer.concat(frames).toString('hex'), name).to.equal(v.input);
    }
  });

  it('a failed decoder stays failed', () => {
    const decoder = new ByteFrameDecoder();
    expect(() => decoder.push(Buffer.from('0900000000', 'hex'), () => undefined)).to.throw().with.property('code', 'ERR_PROTOCOL');
    expect(() => decoder.push(Buffer.from('0a000000080000000000000000', 'hex'), () => undefined)).to.throw().with.property('code', 'ERR_PROTOCOL');
    expect(() => decoder.end()).to.throw().with.property('code', 'ERR_PROTOCOL');
  });

  it('the document prints every vector', () => {
    const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');
    for (const v of vectors.streams) {
      if (v.input) expect(doc).to.include(`\`${v.input}\``);
      expect(doc).to.include(v.name);
    }
  });
});

// ---- peers that end a byte stream short ----

type Transport = 'h2' | 'ws';
const transports: Transport[] = ['h2', 'ws'];

const framed = (text: string): Buffer => Buffer.concat([bytesHeader(Buffer.byteLength(text)), Buffer.from(text)]);

/** How a dishonest peer (or a proxy) ends the direction it writes, after sending "hello". */
const shortEnds: { name: string; bytes: Buffer; code: string; delivered: string }[] = [
  { name: 'without the end proof', bytes: framed('hello'), code: 'ERR_STREAM_TRUNCATED', delivered: 'hello' },
  { name: 'inside a BYTES frame (10 promised, 5 sent)', bytes: Buffer.concat([bytesHeader(10), Buffer.from('hello')]), code: 'ERR_STREAM_TRUNCATED', delivered: 'hello' },
  { name: 'with a count that differs from the bytes sent (9 for 5)', bytes: Buffer.concat([framed('hello'), bytesEnd(9)]), code: 'ERR_STREAM_TRUNCATED', delivered: 'hello' },
  { name: 'with raw bytes and no frames (a peer of the revision before §6.2)', bytes: Buffer.from('hello'), code: 'ERR_PROTOCOL', delivered: '' },
];

/** A byte-stream reference `{o, id, m}` as a VALUE payload (MessagePack extension 0x11, map 16). */
function referenceValue(owner: 'c' | 's', id: string): Buffer {
  const str = (t: string) => Buffer.concat([Buffer.from([0xa0 | t.length]), Buffer.from(t)]);
  const map = Buffer.concat([Buffer.from('de0003', 'hex'), str('o'), str(owner), str('id'), str(id), str('m'), str('r')]);
  return Buffer.concat([Buffer.from([0xc7, map.length, 0x11]), map]);
}

/** Everything a stream gives until it ends or fails, and the failure. */
async function readUntilFailure(stream: NodeJS.ReadableStream): Promise<{ got: string; error: { code?: string; message: string } | null }> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  } catch (err) {
    return { got: Buffer.concat(chunks).toString(), error: err as { code?: string; message: string } };
  }
  return { got: Buffer.concat(chunks).toString(), error: null };
}

/** A raw client: the transport of the library without a session on it, streams written by hand. */
async function rawClient(started: Started, transport: Transport): Promise<{ open(headers: Record<string, string>): Duplex }> {
  const { caCert } = await testCertificates();
  const t = await openTransport(new URL(started.url), transport, { ca: caCert });
  onTeardown(() => t.destroy());
  const base = { 'netchan-version': '1' };
  const control = t.open({ ...base, 'netchan-kind': 'session' });
  const { headers } = await new Promise<WireResponse>((resolve) => control.onResponse(resolve));
  control.bytes.resume();
  const session = String(headers['netchan-session']);
  return { open: (h) => t.open({ ...base, 'netchan-session': session, ...h }).bytes };
}

/**
 * A fake server for a real client: answers the session, a channel `downloads` whose one value is
 * a byte-stream reference `s1`, and that byte stream, whose response body `writeBody` writes.
 */
async function fakeServer(transport: Transport, writeBody: (stream: Duplex) => void): Promise<string> {
  const certs = await testCertificates();
  const onStream = (wire: ServerWireStream): void => {
    const stream = wire.bytes;
    const headers = wire.headers;
    stream.on('error', () => undefined);
    const kind = headers['netchan-kind'];
    if (kind === 'session') {
      wire.respond(200, { 'netchan-session': '00112233445566778899aabbccddeeff', 'netchan-heartbeat-ms': '15000', 'netchan-max-frame-bytes': '1048576' });
      stream.write(encodeFrame(FrameType.PING, Buffer.alloc(8)));
      stream.resume();
    } else if (kind === 'channel') {
      wire.respond(200, { 'netchan-capacity': '1', 'netchan-credit': '1' });
      stream.write(encodeFrame(FrameType.ACK, Buffer.alloc(4)));
      // the client's CREDIT asks for the value
      stream.once('data', () => stream.write(encodeFrame(FrameType.VALUE, referenceValue('s', 's1'))));
      stream.on('data', () => undefined);
    } else {
      expect(headers['netchan-ref']).to.equal('s1');
      wire.respond(200);
      stream.resume();
      writeBody(stream);
    }
  };
  let server: http2.Http2SecureServer | https.Server;
  if (transport === 'h2') {
    const h2 = http2.createSecureServer({ key: certs.key, cert: certs.cert });
    h2.on('stream', (stream, headers) => onStream(new Http2ServerStream(stream, headers)));
    server = h2;
  } else {
    const wss = new WebSocketServer({ noServer: true, maxPayload: MUX_MAX_MESSAGE, handleProtocols: () => WS_SUBPROTOCOL });
    const h1 = https.createServer({ key: certs.key, cert: certs.cert });
    h1.on('upgrade', (req, socket, head) => {
      wss.handleUpgrade(req, socket, head, (ws) => {
        const mux = new WsMux(ws, 'server');
        mux.on('error', () => undefined);
        mux.on('stream', onStream);
        onTeardown(() => mux.destroy());
      });
    });
    server = h1;
  }
  server.on('connection', (socket: { destroy(): void }) => onTeardown(() => socket.destroy()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onTeardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `https://localhost:${(server.address() as AddressInfo).port}/`;
}

/** `total` random bytes in 64 KiB chunks, and the SHA-256 of what was produced. */
function randomSource(total: number): { stream: Readable; digest: () => string } {
  const hash = createHash('sha256');
  let left = total;
  const stream = new Readable({
    read() {
      if (left === 0) return void this.push(null);
      const chunk = randomBytes(Math.min(left, 64 * 1024));
      left -= chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, digest: () => hash.digest('hex') };
}

/** An honest client of `started` moves 1 MiB each way with digests: the server is fine. */
async function honestRoundTrip(started: Started, transport: Transport): Promise<void> {
  const name = `honest-${randomBytes(4).toString('hex')}`;
  const up = started.server.channel<Readable>(`${name}-up`, 1);
  const down = started.server.channel<Readable>(`${name}-down`, 1);
  const session = await started.client({ transport });
  const a = randomSource(1024 * 1024);
  await session.channel<Readable>(`${name}-up`).send(a.stream);
  const gotUp = await digestOf(await up.receive());
  expect(gotUp).to.deep.equal({ hex: a.digest(), bytes: 1024 * 1024 });
  const b = randomSource(1024 * 1024);
  await down.send(b.stream);
  const gotDown = await digestOf(await session.channel<Readable>(`${name}-down`).receive());
  expect(gotDown).to.deep.equal({ hex: b.digest(), bytes: 1024 * 1024 });
}

function byteStreamsOpen(server: NetchanServer): number {
  return server.stats().byteStreams;
}

describe('regression: a byte stream whose peer ends it without the end proof fails at the reader instead of reading as complete', function () {
  this.timeout(30_000);
  afterEach(teardown);

  for (const transport of transports) {
    describe(`over ${transport === 'h2' ? 'HTTP/2' : 'the WebSocket fallback'}`, () => {
      for (const end of shortEnds) {
        it(`client → server, ended ${end.name}: the server's reader fails with ${end.code}; the server and an honest client are fine`, async () => {
          const started = await startServer();
          const uploads = started.server.channel<Readable>('uploads', 1);
          const raw = await rawClient(started, transport);
          // the byte stream first (§4.2), then the value that names it
          const bytes = raw.open({ 'netchan-kind': 'bytes', 'netchan-stream': 'c1', 'netchan-export': 'c1', 'netchan-mode': 'r' });
          bytes.on('error', () => undefined);
          bytes.resume();
          const channel = raw.open({ 'netchan-kind': 'channel', 'netchan-stream': 'c2', 'netchan-name': 'uploads' });
          channel.on('error', () => undefined);
          channel.resume();
          channel.write(encodeFrame(FrameType.VALUE, referenceValue('c', 'c1')));
          bytes.end(end.bytes);
          const { got, error } = await readUntilFailure(await uploads.receive());
          // what arrived before the end may have been read, or dropped with the failed stream
          expect(end.delivered.startsWith(got), got).to.equal(true);
          expect(error, 'the reader must fail, not end').to.not.equal(null);
          expect(error!.code).to.equal(end.code);
          if (end.code === 'ERR_STREAM_TRUNCATED') expect(error!.message).to.match(/cut short/);
          await until(() => byteStreamsOpen(started.server) === 0, 5000, 'the failed byte stream to go');
          // the dishonest peer's session lives on: only its byte stream failed
          expect(started.server.stats().sessions).to.equal(1);
          await honestRoundTrip(started, transport);
        });

        it(`server → client, ended ${end.name}: the client's reader fails with ${end.code}; its session lives on`, async () => {
          const url = await fakeServer(transport, (stream) => stream.end(end.bytes));
          const { caCert } = await testCertificates();
          const session = await connect(url, { ca: caCert, transport, reconnect: false });
          onTeardown(() => session.close());
          const download = await session.channel<Readable>('downloads').receive();
          const { got, error } = await readUntilFailure(download);
          expect(end.delivered.startsWith(got), got).to.equal(true);
          expect(error, 'the reader must fail, not end').to.not.equal(null);
          expect(error!.code).to.equal(end.code);
          await until(() => session.stats().byteStreams === 0, 5000, 'the failed byte stream to go');
          expect(session.closed).to.equal(false);
        });
      }

      it('a fake server that ends its body with the right proof is read to the end (the fake is honest when it should be)', async () => {
        const url = await fakeServer(transport, (stream) => stream.end(Buffer.concat([framed('hel'), framed('lo'), bytesEnd(5)])));
        const { caCert } = await testCertificates();
        const session = await connect(url, { ca: caCert, transport, reconnect: false });
        onTeardown(() => session.close());
        const { got, error } = await readUntilFailure(await session.channel<Readable>('downloads').receive());
        expect(error).to.equal(null);
        expect(got).to.equal('hello');
      });
    });
  }
});

describe('regression: a refused byte-stream export fails its local stream with the refusal, not with its text body read as frames', function () {
  this.timeout(30_000);
  afterEach(teardown);

  for (const transport of transports) {
    it(`over ${transport}: a client Writable over the server's byte-stream limit fails with ERR_LIMIT and gets no bytes`, async () => {
      const started = await startServer({ maxByteStreamsPerSession: 1 });
      const jobs = started.server.channel<unknown>('jobs', 4);
      const session = await started.client({ transport });
      const held = new PassThrough();
      await session.channel<unknown>('jobs').send(held); // the one byte stream this session may have
      let written = 0;
      const local = new Writable({
        write(chunk: Buffer, _enc, cb) {
          written += chunk.length;
          cb();
        },
      });
      const failed = once(local, 'error');
      void session.channel<unknown>('jobs').send(local).catch(() => undefined);
      void jobs.receive();
      void jobs.receive().catch(() => undefined);
      const [err] = (await failed) as [{ code: string }];
      expect(err.code).to.equal('ERR_LIMIT');
      expect(written).to.equal(0);
      held.end();
    });
  }
});

describe('byte streams with the end proof still pass', function () {
  this.timeout(30_000);
  afterEach(teardown);

  for (const transport of transports) {
    describe(`over ${transport === 'h2' ? 'HTTP/2' : 'the WebSocket fallback'}`, () => {
      it('1 MiB each way arrives with its SHA-256 digest and ends cleanly', async () => {
        const started = await startServer();
        await honestRoundTrip(started, transport);
        await until(() => byteStreamsOpen(started.server) === 0, 5000, 'byte streams to close');
      });

      it('a Duplex carries 1 MiB both ways at once, each direction with its own proof', async () => {
        const started = await startServer();
        const pipes = started.server.channel<Duplex>('pipes', 1);
        const toServer = randomSource(1024 * 1024);
        const toClient = randomSource(1024 * 1024);
        // the server's Duplex: what it reads is its data for the client, what it gets written is hashed
        const hash = createHash('sha256');
        let received = 0;
        const sink = new Writable({
          write(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            received += chunk.length;
            cb();
          },
        });
        const sinkFinished = once(sink, 'finish');
        await pipes.send(Duplex.from({ readable: toClient.stream, writable: sink }));
        const session = await started.client({ transport });
        const wire = await session.channel<Duplex>('pipes').receive();
        const [down] = await Promise.all([digestOf(wire), pipeline(toServer.stream, wire)]);
        await sinkFinished;
        expect(down).to.deep.equal({ hex: toClient.digest(), bytes: 1024 * 1024 });
        expect({ hex: hash.digest('hex'), bytes: received }).to.deep.equal({ hex: toServer.digest(), bytes: 1024 * 1024 });
      });

      it('empty byte streams end cleanly both ways (only the proof of 0)', async () => {
        const started = await startServer();
        const up = started.server.channel<Readable>('up', 1);
        const down = started.server.channel<Readable>('down', 1);
        const session = await started.client({ transport });
        await session.channel<Readable>('up').send(Readable.from([]));
        expect(await readUntilFailure(await up.receive())).to.deep.equal({ got: '', error: null });
        await down.send(Readable.from([]));
        expect(await readUntilFailure(await session.channel<Readable>('down').receive())).to.deep.equal({ got: '', error: null });
      });

      it('strings, empty writes and end(chunk) on the wire count as the bytes they are', async () => {
        const started = await startServer();
        const sinks = started.server.channel<Writable>('sinks', 1);
        const chunks: Buffer[] = [];
        const sink = new Writable({
          write(chunk: Buffer, _enc, cb) {
            chunks.push(chunk);
            cb();
          },
        });
        const finished = once(sink, 'finish');
        await sinks.send(sink);
        const session = await started.client({ transport });
        const wire = await session.channel<Writable>('sinks').receive();
        wire.write('héllo ');
        wire.write(Buffer.alloc(0));
        wire.end('wörld');
        await finished;
        expect(Buffer.concat(chunks).toString()).to.equal('héllo wörld');
      });
    });
  }
});
