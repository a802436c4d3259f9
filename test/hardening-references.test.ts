/**
 * Hardening: references inside values (docs/PROTOCOL.md §4.2, §5.1, §6.1).
 *
 * 1. The streams a value names may arrive before or after it, on any connection of the session
 *    (a proxy spreads them over its upstream connections). A raw client speaks the protocol by
 *    hand, over HTTP/2 and over the WebSocket fallback, and forces each arrival order: the value
 *    first, one export before and one after it, exports on a second connection, many references
 *    in one value, and several waiting values at once. The server takes a value whole, once every
 *    stream it names is there, or not at all.
 * 2. A send refused before anything was written (`mayHaveBeenDelivered: false`) did nothing: no
 *    export opened at the server, no Readable read from, and the same value can be sent again.
 *
 * Each test also shows that the server and an honest client on it carry on.
 */
import { Readable, Writable, type Duplex } from 'node:stream';
import { expect } from 'chai';
import { Channel, type ChannelLike, type Session } from '../lib/index.js';
import { bytesEnd, bytesHeader } from '../lib/wire/byte-frames.js';
import { Codec, type ReferenceHooks } from '../lib/wire/codec.js';
import { FrameType, encodeFrame } from '../lib/wire/frames.js';
import { openTransport } from '../lib/transport/connect.js';
import type { ClientWireSession, ClientWireStream, WireResponse } from '../lib/transport/contract.js';
import { rejection } from './helpers/assert.js';
import { framesOf, type Frame } from './helpers/raw-stream.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, type Started } from './helpers/net.js';
import { readAll } from './helpers/streams.js';

const codec = new Codec();
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/** A stream of the raw client: its answer, and the frames (or bytes) that came back. */
class RawStream {
  readonly response: Promise<WireResponse>;
  private readonly chunks: Buffer[] = [];
  readonly ended: Promise<void>;
  readonly stream: Duplex;

  constructor(wire: ClientWireStream) {
    const stream = wire.bytes;
    this.stream = stream;
    stream.on('error', () => undefined);
    stream.on('data', (c: Buffer) => this.chunks.push(c));
    this.response = new Promise((resolve, reject) => {
      wire.onResponse(resolve);
      stream.once('close', () => reject(new Error('stream closed before its answer')));
    });
    this.response.catch(() => undefined);
    this.ended = new Promise((resolve) => stream.once('close', () => resolve()));
  }

  async opened(): Promise<void> {
    const { status, headers } = await this.response;
    expect(status, String(headers['netchan-error'])).to.equal(200);
  }

  get body(): Buffer {
    return Buffer.concat(this.chunks);
  }

  frames(): Frame[] {
    return framesOf(this.body);
  }

  send(type: number, payload: Uint8Array): number {
    const frame = encodeFrame(type, payload);
    this.stream.write(frame);
    return frame.length;
  }
}

/**
 * A session spoken by hand: the netchan client never sends a value before the streams it names,
 * this one does. Streams go on any of its connections (`conn`), as through a proxy.
 */
class RawSession {
  private constructor(
    readonly s: Started,
    readonly kind: 'h2' | 'ws',
    readonly connections: ClientWireSession[],
    readonly id: string,
  ) {}

  static async open(s: Started, kind: 'h2' | 'ws'): Promise<RawSession> {
    const conn = await RawSession.connection(s, kind);
    const control = new RawStream(conn.open({ 'netchan-version': '1', 'netchan-kind': 'session' }));
    const { status, headers } = await control.response;
    expect(status).to.equal(200);
    return new RawSession(s, kind, [conn], String(headers['netchan-session']));
  }

  private static async connection(s: Started, kind: 'h2' | 'ws'): Promise<ClientWireSession> {
    const { caCert } = await testCertificates();
    const transport = await openTransport(new URL(s.url), kind, { ca: caCert });
    onTeardown(() => transport.destroy());
    return transport;
  }

  /** Another connection carrying streams of the same session. */
  async secondConnection(): Promise<void> {
    this.connections.push(await RawSession.connection(this.s, this.kind));
  }

  stream(sid: string, headers: Record<string, string>, conn = 0): RawStream {
    const transport = this.connections[conn] as ClientWireSession;
    return new RawStream(transport.open({ 'netchan-version': '1', 'netchan-session': this.id, 'netchan-stream': sid, ...headers }));
  }

  async named(sid: string, name: string): Promise<RawStream> {
    const rs = this.stream(sid, { 'netchan-kind': 'channel', 'netchan-name': name });
    await rs.opened();
    return rs;
  }

  /** Exports a channel of capacity 0 on `sid` (the server gets a handle on it). */
  exportChannel(sid: string, conn = 0): RawStream {
    return this.stream(sid, { 'netchan-kind': 'channel', 'netchan-export': sid, 'netchan-capacity': '0', 'netchan-credit': '1' }, conn);
  }

  /** Exports a Readable on `sid` that gives `data` (one BYTES frame and its end proof, §6.2). */
  exportReadable(sid: string, data: string, conn = 0): RawStream {
    const rs = this.stream(sid, { 'netchan-kind': 'bytes', 'netchan-export': sid, 'netchan-mode': 'r' }, conn);
    const payload = Buffer.from(data);
    rs.stream.end(Buffer.concat([bytesHeader(payload.length), payload, bytesEnd(payload.length)]));
    return rs;
  }
}

/** A stand-in that the codec turns into the reference given. */
class Ref {
  constructor(readonly data: Record<string, unknown>) {}
}
const channelRef = (id: string) => new Ref({ o: 'c', id });
const bytesRef = (id: string) => new Ref({ o: 'c', id, m: 'r' });

/** Encodes `value` with each Ref in it written as the reference it holds. */
function encodeWithRefs(value: unknown): Uint8Array {
  // the codec hands channels and streams to the hooks: stand-ins of those classes carry the Ref
  const swap = (v: unknown): unknown => {
    if (v instanceof Ref) return Object.assign('m' in v.data ? new Readable({ read() {} }) : new Channel(), { ref: v });
    if (Array.isArray(v)) return v.map(swap);
    if (v instanceof Map) return new Map([...v].map(([k, x]) => [k, swap(x)]));
    if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, swap(x)]));
    return v;
  };
  const hooks: ReferenceHooks = { encodeReference: (_kind, obj) => (obj as { ref: Ref }).ref.data, decodeReference: () => undefined };
  return codec.encode(swap(value), hooks);
}

/** Resolves once the server has read `n` more bytes than `from` (the decode of what they held ran). */
async function serverRead(s: Started, from: number, n: number): Promise<void> {
  await until(() => s.server.stats().bytesIn >= from + n, 5000, 'the server to read the value');
}

/** The value a raw reply channel received, acknowledged (the server's capacity-0 send completes). */
async function replyOn(rs: RawStream): Promise<unknown> {
  await until(() => rs.frames().some((f) => f.type === FrameType.VALUE), 10_000, 'the reply');
  rs.send(FrameType.ACK, u32(1));
  return codec.decode(rs.frames().find((f) => f.type === FrameType.VALUE)!.payload);
}

/** A well-behaved client on the same server: values go both ways. */
async function bystander(s: Started, transport: 'h2' | 'ws'): Promise<{ session: Session; exchange: (n: number) => Promise<void> }> {
  const echo = s.server.channel<{ n: number; reply: ChannelLike<number> }>(`bystander-${transport}`, 8);
  void (async () => {
    for (;;) {
      const { n, reply } = await echo.receive();
      await reply.send(n + 1);
    }
  })().catch(() => undefined);
  const session = await s.client({ transport });
  const remote = session.channel<{ n: number; reply: ChannelLike<number> }>(`bystander-${transport}`);
  return {
    session,
    async exchange(n: number) {
      for (let i = 0; i < n; i++) {
        const reply = new Channel<number>();
        await remote.send({ n: i, reply });
        expect(await reply.receive()).to.equal(i + 1);
      }
    },
  };
}

type Job = { n: number; reply: ChannelLike<number>; data: Readable };

/** Serves `jobs`: reads each job's data and replies with n and the text it read. */
function serveJobs(jobs: Channel<Job>, seen: string[]): void {
  void (async () => {
    for (;;) {
      const { n, reply, data } = await jobs.receive();
      const text = (await readAll(data)).toString();
      seen.push(`${n}:${text}`);
      void reply.send(n * 10);
    }
  })().catch(() => undefined);
}

for (const transport of ['h2', 'ws'] as const) {
  describe(`hardening: references arriving in any order (${transport === 'h2' ? 'HTTP/2' : 'the WebSocket fallback'})`, function () {
    this.timeout(30_000);
    afterEach(teardown);

    type Step = 'value' | 'channel' | 'bytes';
    const orders: [string, Step[], boolean?][] = [
      ['references arriving after it', ['value', 'channel', 'bytes']],
      ['references arriving after it, the byte stream first', ['value', 'bytes', 'channel']],
      ['the reply channel before it and the byte stream after it', ['channel', 'value', 'bytes']],
      ['the byte stream before it and the reply channel after it', ['bytes', 'value', 'channel']],
      ['references arriving before it', ['channel', 'bytes', 'value']],
      ['references arriving after it on a second connection', ['value', 'bytes', 'channel'], true],
      ['one reference before it on a second connection, one after it on the first', ['channel', 'value', 'bytes'], true],
    ];
    for (const [what, steps, second] of orders) {
      it(`regression: a value with a reply channel and a byte stream survives ${what}`, async () => {
        const s = await startServer({ referenceTimeoutMs: 5000 });
        const jobs = s.server.channel<Job>('jobs', 4);
        const seen: string[] = [];
        serveJobs(jobs, seen);
        const by = await bystander(s, transport);
        const raw = await RawSession.open(s, transport);
        if (second) await raw.secondConnection();
        const c1 = await raw.named('c1', 'jobs');
        let reply: RawStream | undefined;
        let sentValue = false;
        for (const [i, step] of steps.entries()) {
          // with a second connection, the streams alternate between the two
          const conn = second ? i % 2 : 0;
          const before = s.server.stats();
          if (step === 'value') {
            const n = c1.send(FrameType.VALUE, encodeWithRefs({ n: 7, reply: channelRef('c2'), data: bytesRef('c3') }));
            await serverRead(s, before.bytesIn, n);
            sentValue = true;
          } else if (step === 'channel') {
            reply = raw.exportChannel('c2', conn);
            await reply.opened();
            await until(() => s.server.stats().channels === before.channels + 1, 5000, 'the exported channel');
          } else {
            const up = raw.exportReadable('c3', 'payload of 7', conn);
            await up.opened();
          }
          // the value waits until its last reference is there, and nothing of it went missing
          if (sentValue && i < steps.length - 1) expect(seen, `after ${step}`).to.deep.equal([]);
        }
        expect(await replyOn(reply as RawStream)).to.equal(70);
        expect(seen).to.deep.equal(['7:payload of 7']);
        // nothing failed on the stream that carried the value
        expect(c1.frames().filter((f) => f.type === FrameType.ERROR)).to.deep.equal([]);
        await by.exchange(5);
      });
    }

    it('regression: a value naming 8 channels and 8 byte streams, half before and half after it, interleaved over two connections, is taken whole', async () => {
      const s = await startServer({ referenceTimeoutMs: 5000 });
      const fan = s.server.channel<{ replies: ChannelLike<number>[]; data: Readable[] }>('fan', 1);
      const by = await bystander(s, transport);
      const raw = await RawSession.open(s, transport);
      await raw.secondConnection();
      const c1 = await raw.named('c1', 'fan');
      const N = 8;
      const chanSid = (i: number) => `r${i}`;
      const bytesSid = (i: number) => `d${i}`;
      const replies: RawStream[] = [];
      const open = async (i: number, conn: number) => {
        replies[i] = raw.exportChannel(chanSid(i), conn);
        await replies[i]!.opened();
        await raw.exportReadable(bytesSid(i), `part ${i}`, 1 - conn).opened();
      };
      for (let i = 0; i < N; i += 2) await open(i, i % 4 === 0 ? 0 : 1);
      const before = s.server.stats();
      const n = c1.send(FrameType.VALUE, encodeWithRefs({ replies: Array.from({ length: N }, (_, i) => channelRef(chanSid(i))), data: Array.from({ length: N }, (_, i) => bytesRef(bytesSid(i))) }));
      await serverRead(s, before.bytesIn, n);
      for (let i = N - 1; i > 0; i -= 2) {
        expect(fan.length, `before the references of ${i}`).to.equal(0);
        await open(i, i % 4 === 1 ? 0 : 1);
      }
      const { replies: handles, data } = await fan.receive();
      expect(handles).to.have.length(N);
      const texts = await Promise.all(data.map(async (d) => (await readAll(d)).toString()));
      expect(texts).to.deep.equal(Array.from({ length: N }, (_, i) => `part ${i}`));
      handles.forEach((h, i) => void h.send(i));
      for (let i = 0; i < N; i++) expect(await replyOn(replies[i]!)).to.equal(i);
      expect(c1.frames().filter((f) => f.type === FrameType.ERROR)).to.deep.equal([]);
      expect(s.server.stats().pendingReferences).to.equal(0);
      await by.exchange(5);
    });

    it('regression: three values waiting at once on three streams get their own references, arriving in reverse order over two connections', async () => {
      const s = await startServer({ referenceTimeoutMs: 5000 });
      const jobs = s.server.channel<Job>('jobs', 4);
      const seen: string[] = [];
      serveJobs(jobs, seen);
      const by = await bystander(s, transport);
      const raw = await RawSession.open(s, transport);
      await raw.secondConnection();
      const carriers = [await raw.named('c1', 'jobs'), await raw.named('c2', 'jobs'), await raw.named('c3', 'jobs')];
      for (const [k, c] of carriers.entries()) {
        const before = s.server.stats().bytesIn;
        const n = c.send(FrameType.VALUE, encodeWithRefs({ n: k, reply: channelRef(`r${k}`), data: bytesRef(`d${k}`) }));
        await serverRead(s, before, n);
      }
      // and a second value behind the first on one stream, naming streams that are already there
      const early = raw.exportChannel('r9', 0);
      await early.opened();
      await raw.exportReadable('d9', 'nine', 0).opened();
      carriers[0]!.send(FrameType.VALUE, encodeWithRefs({ n: 9, reply: channelRef('r9'), data: bytesRef('d9') }));
      const replies: RawStream[] = [];
      // each value's reply channel first, its byte stream last: the value is woken by its last one
      for (let k = 2; k >= 0; k--) {
        replies[k] = raw.exportChannel(`r${k}`, k % 2);
        await replies[k]!.opened();
        await raw.exportReadable(`d${k}`, `data ${k}`, (k + 1) % 2).opened();
      }
      for (let k = 0; k < 3; k++) expect(await replyOn(replies[k]!)).to.equal(k * 10);
      expect(await replyOn(early)).to.equal(90);
      expect([...seen].sort()).to.deep.equal(['0:data 0', '1:data 1', '2:data 2', '9:nine']);
      // order per stream holds: 0 before 9
      expect(seen.indexOf('0:data 0')).to.be.lessThan(seen.indexOf('9:nine'));
      await by.exchange(5);
    });

    it('a value waiting for a stream that never comes fails with ERR_UNKNOWN_REFERENCE after the reference timeout, and the reference that did arrive is not taken', async () => {
      const s = await startServer({ referenceTimeoutMs: 300 });
      const jobs = s.server.channel<Job>('jobs', 4);
      const by = await bystander(s, transport);
      const raw = await RawSession.open(s, transport);
      const c1 = await raw.named('c1', 'jobs');
      await raw.exportChannel('c2').opened();
      c1.send(FrameType.VALUE, encodeWithRefs({ n: 1, reply: channelRef('c2'), data: bytesRef('c3') }));
      await until(() => c1.frames().some((f) => f.type === FrameType.ERROR), 5000, 'the ERROR frame');
      const err = codec.decode(c1.frames().find((f) => f.type === FrameType.ERROR)!.payload) as { code: string; message: string };
      expect(err.code).to.equal('ERR_UNKNOWN_REFERENCE');
      expect(err.message).to.contain('c3');
      expect(jobs.length).to.equal(0);
      await by.exchange(5);
    });

    it('regression: a handle sent back to the server (a back-reference) before its own stream arrived, on another connection, waits for it', async () => {
      const s = await startServer({ referenceTimeoutMs: 5000 });
      const jobs = s.server.channel<{ h: unknown }>('jobs', 4);
      const other = s.server.channel<number>('other', 4);
      const by = await bystander(s, transport);
      const raw = await RawSession.open(s, transport);
      await raw.secondConnection();
      const c1 = await raw.named('c1', 'jobs');
      const before = s.server.stats().bytesIn;
      const n = c1.send(FrameType.VALUE, encodeWithRefs({ h: new Ref({ b: 'c5' }) }));
      await serverRead(s, before, n);
      expect(jobs.length).to.equal(0);
      const c5 = raw.stream('c5', { 'netchan-kind': 'channel', 'netchan-name': 'other' }, 1);
      await c5.opened();
      const { h } = await jobs.receive();
      expect(h).to.equal(other);
      await by.exchange(5);
    });

    it('a value that would wait for more streams than the session may ever open fails with ERR_LIMIT at once', async () => {
      const s = await startServer({ referenceTimeoutMs: 5000, maxChannelsPerSession: 16, maxByteStreamsPerSession: 4 });
      s.server.channel<unknown>('jobs', 4);
      const by = await bystander(s, transport);
      const raw = await RawSession.open(s, transport);
      const c1 = await raw.named('c1', 'jobs');
      const started = Date.now();
      c1.send(FrameType.VALUE, encodeWithRefs({ many: Array.from({ length: 21 }, (_, i) => channelRef(`x${i}`)) }));
      await until(() => c1.frames().some((f) => f.type === FrameType.ERROR), 5000, 'the ERROR frame');
      expect(Date.now() - started).to.be.below(4000);
      const err = codec.decode(c1.frames().find((f) => f.type === FrameType.ERROR)!.payload) as { code: string };
      expect(err.code).to.equal('ERR_LIMIT');
      await by.exchange(5);
    });

    it('a value naming one exported stream twice is refused with ERR_DUPLICATE_REFERENCE before either is taken', async () => {
      const s = await startServer({ referenceTimeoutMs: 2000 });
      const jobs = s.server.channel<unknown>('jobs', 4);
      const by = await bystander(s, transport);
      const raw = await RawSession.open(s, transport);
      const c1 = await raw.named('c1', 'jobs');
      await raw.exportChannel('c2').opened();
      c1.send(FrameType.VALUE, encodeWithRefs({ a: channelRef('c2'), b: channelRef('c2') }));
      await until(() => c1.frames().some((f) => f.type === FrameType.ERROR), 5000, 'the ERROR frame');
      const err = codec.decode(c1.frames().find((f) => f.type === FrameType.ERROR)!.payload) as { code: string };
      expect(err.code).to.equal('ERR_DUPLICATE_REFERENCE');
      // c2 was not taken: another value may still name it
      const c3 = await raw.named('c3', 'jobs');
      c3.send(FrameType.VALUE, encodeWithRefs({ a: channelRef('c2') }));
      const got = (await jobs.receive()) as { a: ChannelLike<number> };
      expect(got.a).to.have.property('send');
      await by.exchange(5);
    });
  });

  describe(`hardening: a refused send leaves nothing behind (${transport === 'h2' ? 'HTTP/2' : 'the WebSocket fallback'})`, function () {
    this.timeout(30_000);
    afterEach(teardown);

    /** A Readable holding `text`, never read yet. */
    function untouched(text: string): Readable {
      const r = new Readable({ read() {} });
      r.push(text);
      r.push(null);
      return r;
    }

    function expectUntouched(r: Readable, text: string): void {
      expect(r.readableFlowing, 'the Readable was never set flowing').to.equal(null);
      expect(r.destroyed).to.equal(false);
      expect(r.listenerCount('data')).to.equal(0);
      expect(r.readableLength).to.equal(Buffer.byteLength(text));
    }

    const counts = (x: { streams: number; channels: number; byteStreams: number; pendingReferences: number }) => ({
      streams: x.streams,
      channels: x.channels,
      byteStreams: x.byteStreams,
      pendingReferences: x.pendingReferences,
    });

    const refusals: [string, (v: Record<string, unknown>) => Record<string, unknown>, string][] = [
      ['ERR_VALUE_TOO_LARGE: the encoded value exceeds the peer\'s maxFrameBytes', (v) => ({ ...v, blob: Buffer.alloc(100 * 1024) }), 'ERR_VALUE_TOO_LARGE'],
      ['ERR_ENCODE: an unencodable member after the channel and the byte stream', (v) => ({ ...v, bad: () => 1 }), 'ERR_ENCODE'],
    ];
    for (const [what, spoil, code] of refusals) {
      it(`regression: a send refused with ${what} opens no export, leaves the Readable unread, and the same value sends once it fits`, async () => {
        const s = await startServer({ maxFrameBytes: 64 * 1024 });
        const jobs = s.server.channel<Job>('jobs', 4);
        const hello = s.server.channel<number>('hello', 1);
        const seen: string[] = [];
        serveJobs(jobs, seen);
        const by = await bystander(s, transport);
        const session = await s.client({ transport });
        const remote = session.channel<Record<string, unknown>>('jobs');
        const ping = session.channel<number>('hello');
        // Streams of one session share its connection, in order: once a value sent after them
        // arrived, the server has seen every stream opened before it.
        const roundTrip = async () => {
          await ping.send(1);
          expect(await hello.receive()).to.equal(1);
        };
        await roundTrip();
        const server0 = counts(s.server.stats());
        const client0 = counts(session.stats());

        const reply = new Channel<number>(1);
        const data = untouched('all of it');
        const value = { n: 1, reply, data };
        const err = await rejection(remote.send(spoil(value)));
        expect(err.code).to.equal(code);
        expect(err.mayHaveBeenDelivered).to.equal(false);

        expectUntouched(data, 'all of it');
        expect(counts(session.stats()), 'client').to.deep.equal(client0);
        await roundTrip();
        expect(counts(s.server.stats()), 'server').to.deep.equal(server0);
        expect(reply.closed).to.equal(false);

        // the same value, once it fits
        await remote.send(value);
        expect(await reply.receive()).to.equal(10);
        await until(() => seen.length === 1, 5000, 'the job');
        expect(seen).to.deep.equal(['1:all of it']);
        await by.exchange(3);
      });
    }

    it('regression: a value the server cannot send (too large, or unencodable after a channel and a Readable) leaves no pending reference, and its Readable unread', async () => {
      const s = await startServer({ maxFrameBytes: 64 * 1024 });
      const down = s.server.channel<Record<string, unknown>>('down', 4);
      const by = await bystander(s, transport);
      const session = await s.client({ transport });
      for (const [i, spoil] of [(v: object) => ({ ...v, blob: Buffer.alloc(100 * 1024) }), (v: object) => ({ ...v, bad: () => 1 })].entries()) {
        const data = untouched(`server data ${i}`);
        const ch = new Channel<string>(1);
        await down.send(spoil({ ch, data }));
        const handle = session.channel<Record<string, unknown>>('down');
        const err = await rejection(handle.receive());
        expect(err.code).to.be.oneOf(['ERR_VALUE_TOO_LARGE', 'ERR_ENCODE']);
        expect(s.server.stats().pendingReferences).to.equal(0);
        expectUntouched(data, `server data ${i}`);
        // the value went back to the channel: take it, mend it, send it again
        const back = down.tryReceive();
        expect(back.ok).to.equal(true);
        const mended = { ...((back as { value: Record<string, unknown> }).value) };
        delete mended.blob;
        delete mended.bad;
        await down.send(mended);
        const got = (await session.channel<{ ch: ChannelLike<string>; data: Readable }>('down').receive());
        expect((await readAll(got.data)).toString()).to.equal(`server data ${i}`);
        await got.ch.send('through');
        expect(await ch.receive()).to.equal('through');
      }
      await by.exchange(3);
    });

    it('regression: a value whose second reference the client cannot take (a back-reference to a stream gone) opens no stream for the first', async () => {
      const s = await startServer();
      const up = s.server.channel<{ reply: ChannelLike<number> }>('up', 1);
      const down = s.server.channel<unknown>('down', 1);
      const by = await bystander(s, transport);
      const session = await s.client({ transport });
      // the server gets a handle on a client channel, whose stream then ends
      const mine = new Channel<number>(1);
      await session.channel<{ reply: ChannelLike<number> }>('up').send({ reply: mine });
      const { reply } = await up.receive();
      mine.close();
      await until(() => reply.closed, 5000, 'the handle to see the close');
      const handle = session.channel<unknown>('down');
      await handle.send('open'); // the handle's stream is open
      expect(await down.receive()).to.equal('open');
      await until(() => session.stats().channels === 2, 5000, 'the exported channel to go');
      const server0 = counts(s.server.stats());
      const client0 = counts(session.stats());
      await down.send({ fresh: new Channel<number>(1), gone: reply });
      const err = await rejection(handle.receive());
      expect(err.code).to.equal('ERR_UNKNOWN_REFERENCE');
      await by.exchange(3);
      // the fresh channel's reference is still pending: no stream was opened for it
      expect(s.server.stats().pendingReferences).to.equal(server0.pendingReferences + 1);
      expect(counts(session.stats()).byteStreams).to.equal(client0.byteStreams);
      expect(session.stats().channels).to.be.at.most(client0.channels);
      expect(session.closed).to.equal(false);
    });
  });
}

describe('hardening: the codec shows a session every reference before it takes any', () => {
  it('regression: checkReferences sees all references of a value (nested ones too) before any decodeReference, and a refusal there takes none', () => {
    const bytes = encodeWithRefs({ a: channelRef('c2'), list: [bytesRef('c3'), new Map([['k', channelRef('c4')]])] });
    const calls: string[] = [];
    const hooks: ReferenceHooks = {
      encodeReference: () => ({}),
      checkReferences: (refs) => calls.push(`check ${refs.map((r) => `${r.kind}:${String(r.data.id)}`).join(' ')}`),
      decodeReference: (kind, data) => {
        calls.push(`take ${kind}:${String(data.id)}`);
        return String(data.id);
      },
    };
    expect(codec.decode(bytes, hooks)).to.deep.equal({ a: 'c2', list: ['c3', new Map([['k', 'c4']])] });
    expect(calls[0]).to.equal('check channel:c2 bytes:c3 channel:c4');
    expect(calls.slice(1).sort()).to.deep.equal(['take bytes:c3', 'take channel:c2', 'take channel:c4']);
    calls.length = 0;
    const marker = new Error('wait');
    expect(() => codec.decode(bytes, { ...hooks, checkReferences: () => { throw marker; } })).to.throw().that.equals(marker);
    expect(calls).to.deep.equal([]);
    // no references: no check
    codec.decode(codec.encode({ plain: [1, 2] }), hooks);
    expect(calls).to.deep.equal([]);
  });
});

describe('hardening: references — the netchan client against itself', function () {
  this.timeout(30_000);
  afterEach(teardown);

  it('500 request/replies on one session, each with a fresh reply channel and a byte stream, leave no stream or pending reference behind', async () => {
    const s = await startServer();
    const jobs = s.server.channel<Job>('jobs', 16);
    const seen: string[] = [];
    serveJobs(jobs, seen);
    const session = await s.client();
    const remote = session.channel<Job>('jobs');
    for (let n = 0; n < 500; n++) {
      const reply = new Channel<number>();
      await remote.send({ n, reply, data: Readable.from([`d${n}`]) });
      expect(await reply.receive()).to.equal(n * 10);
    }
    expect(seen).to.have.length(500);
    await until(() => s.server.stats().byteStreams === 0 && s.server.stats().pendingReferences === 0, 5000, 'byte streams to close');
  });

  it('a Writable inside a refused value is not ended', async () => {
    const s = await startServer({ maxFrameBytes: 1024 });
    s.server.channel<unknown>('sink', 1);
    const session = await s.client();
    const w = new Writable({ write: (_c, _e, cb) => cb() });
    const err = await rejection(session.channel<unknown>('sink').send({ w, big: 'x'.repeat(4096) }));
    expect(err.code).to.equal('ERR_VALUE_TOO_LARGE');
    expect(w.writableEnded).to.equal(false);
    expect(w.listenerCount('unpipe')).to.equal(0);
    expect(session.stats().byteStreams).to.equal(0);
  });
});
