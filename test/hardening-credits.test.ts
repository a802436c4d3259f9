/**
 * Credits and acknowledgements enforced on receipt (docs/PROTOCOL.md §5.2), and pumps that honour
 * write backpressure. A hostile peer here is a real netchan session whose own frame writer is
 * made to write what the netchan client never would, on its real stream: over HTTP/2 and over
 * the WebSocket fallback alike. Each test shows the offending stream failing with ERR_PROTOCOL,
 * an honest session on the same server still served, the server's event loop responsive and
 * what the server holds bounded by the windows it granted.
 */
import http2 from 'node:http2';
import { Duplex } from 'node:stream';
import { expect } from 'chai';
import { Channel, connect, listen, type ChannelLike, type Session } from '../lib/index.js';
import { ChannelExporter, RemoteChannel, RemoteEndpoint, receiveWindow } from '../lib/session/channel-stream.js';
import { Codec } from '../lib/wire/codec.js';
import { FramedStream, Flusher, TURN_BYTES } from '../lib/session/framed-stream.js';
import { FrameType, encodeFrame } from '../lib/wire/frames.js';
import { PendingReferences, emptyStats, type StreamContext } from '../lib/session/stream-context.js';
import { ErrorCodes, netchanError } from '../lib/core/errors.js';
import type { WireStream } from '../lib/transport/contract.js';
import { rejection } from './helpers/assert.js';
import { framesOf as framesIn } from './helpers/raw-stream.js';
import { exchangeBothWays, watchLoop, watchMax } from './helpers/watch.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, useTransport, type Started } from './helpers/net.js';

const codec = new Codec();
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** The session's endpoint behind a program's RemoteChannel handle; anything else as it is. */
function endpointOf(obj: object): object {
  return (obj as { endpoint?: object }).endpoint ?? obj;
}

/** The frame writer under a channel endpoint (a RemoteChannel handle or a ChannelExporter). */
function framesOf(endpoint: object): FramedStream {
  return (endpointOf(endpoint) as unknown as { fs: FramedStream }).fs;
}

/** Resolves once the owner has answered the handle's stream (credits known). */
async function opened(handle: ChannelLike<unknown>): Promise<void> {
  await until(() => (endpointOf(handle) as unknown as { opened: boolean }).opened, 5000, 'the channel stream to open');
}

/** The client's exporter of one of its channels (made when a value carrying it was sent). */
function exporterOf(session: Session, ch: Channel<unknown>): ChannelExporter {
  const exporters = (session as unknown as { exporters: Map<string, ChannelExporter> }).exporters;
  const ex = [...exporters.values()].find((e) => e.channel === ch);
  expect(ex, 'the client exports the channel').to.not.equal(undefined);
  return ex as ChannelExporter;
}

/** An honest session on the same server exchanges `n` values each way on channels of its own. */
async function honestExchange(s: Started, n = 200): Promise<void> {
  const up = s.server.channel<number>('honest-up', 4);
  const down = s.server.channel<number>('honest-down', 4);
  const session = await s.client();
  const upHandle = session.channel<number>('honest-up');
  const downHandle = session.channel<number>('honest-down');
  const values = Array.from({ length: n }, (_, i) => i);
  await exchangeBothWays(values, { handle: upHandle, channel: up }, { handle: downHandle, channel: down });
}

/** `count` VALUE frames of small numbers, back to back in one buffer. */
function valueFlood(count: number): Buffer {
  const frames: Buffer[] = [];
  for (let i = 0; i < count; i++) frames.push(encodeFrame(FrameType.VALUE, codec.encode(i)));
  return Buffer.concat(frames);
}

/** Writes bytes straight onto the byte stream under `fs`, as a raw peer would. */
function writeRaw(fs: FramedStream, bytes: Buffer): void {
  fs.wire.bytes.write(bytes);
}

for (const transport of ['h2', 'ws'] as const) describe(`credits and acks enforced, over ${transport === 'h2' ? 'HTTP/2' : 'the WebSocket fallback'} (docs/PROTOCOL.md §5.2)`, function () {
  this.timeout(30_000);
  before(() => useTransport(transport));
  after(() => useTransport('h2'));
  afterEach(teardown);

  it('regression: a CREDIT of 0xffffffff on netchan.out does not freeze a listen() server running a producer loop', async () => {
    const { key, cert, caCert } = await testCertificates();
    const capacity = 16;
    const l = await listen<number>('127.0.0.1:0', { key, cert, capacity });
    onTeardown(() => l.close());
    const url = `https://localhost:${l.port}/`;
    let produced = 0;
    let stop = false;
    onTeardown(() => {
      stop = true;
    });
    const producer = (async () => {
      for (let i = 0; i < 200_000 && !stop; i++) {
        await l.send.send(i);
        produced++;
      }
    })().catch(() => undefined);
    const loop = watchLoop();

    const hostile = await connect(url, { ca: caCert, transport });
    onTeardown(() => hostile.close());
    const out = hostile.channel<number>('netchan.out');
    await opened(out);
    framesOf(out).frame(FrameType.CREDIT, u32(0xffffffff));
    const err = await rejection(out.receive());
    expect(err.code).to.equal('ERR_PROTOCOL');
    expect(err.message).to.match(/CREDIT/);

    // another client of the same server is served
    const honest = await connect(url, { ca: caCert, transport });
    onTeardown(() => honest.close());
    const h = honest.channel<number>('netchan.out');
    const got: number[] = [];
    for (let i = 0; i < 50; i++) got.push(await h.receive());
    expect(got).to.deep.equal([...got].sort((a, b) => a - b));
    expect(new Set(got).size).to.equal(50);

    expect(loop.maxGapMs(), 'largest event-loop gap, ms').to.be.below(500);
    // the producer ran only as far as the honest demand and the buffer took it
    expect(produced, 'values taken from the producer').to.be.at.most(capacity + receiveWindow(capacity) + 2);
    stop = true;
    l.send.close();
    await producer;
  });

  it('regression: a remote granted 1 send credit that writes 100,000 VALUEs fails with ERR_PROTOCOL; the server holds at most 1', async () => {
    const s = await startServer();
    const sink = s.server.channel<number>('sink', 0); // capacity 0: one send credit
    const held = watchMax(() => sink.length + sink.waitingSenders);
    const valuesIn = s.server.stats().valuesIn;

    // not resumable: the raw bytes bypass the receipts (RCVD) a resumable stream keeps
    const hostile = await s.client({ reconnect: false });
    const handle = hostile.channel<number>('sink');
    await opened(handle);
    const flood = valueFlood(100_000);
    const loop = watchLoop();
    writeRaw(framesOf(handle), flood);
    const err = await rejection(handle.receive());
    expect(err.code).to.equal('ERR_PROTOCOL');
    expect(err.message).to.match(/send credit/);

    expect(s.server.stats().valuesIn - valuesIn, 'values the server decoded').to.be.at.most(1);
    await honestExchange(s);
    expect(held.max(), 'values the server held for the offender').to.be.at.most(1);
    expect(sink.waitingSenders, 'nothing left parked once the stream is gone').to.equal(0);
    expect(loop.maxGapMs(), 'largest event-loop gap, ms').to.be.below(500);
  });

  it('regression: an owner that writes 100,000 VALUEs nobody asked for (no CREDIT) fails the handle with ERR_PROTOCOL; its inbox stays empty', async () => {
    const s = await startServer();
    const mailbox = s.server.channel<Channel<number>>('mailbox', 1);
    const hostile = await s.client({ reconnect: false });
    const mine = new Channel<number>(0);
    await hostile.channel<Channel<number>>('mailbox').send(mine);
    const handle = (await mailbox.receive()) as unknown as RemoteChannel<number>;
    expect(handle).to.be.instanceOf(RemoteChannel);
    await opened(handle);
    const inbox = watchMax(() => handle.length);

    const flood = valueFlood(100_000);
    const loop = watchLoop();
    writeRaw(framesOf(exporterOf(hostile, mine as Channel<unknown>)), flood);
    await until(() => handle.closed, 10_000, 'the handle to fail');
    const err = await rejection(handle.receive());
    expect(err.code).to.equal('ERR_PROTOCOL');
    expect(err.message).to.match(/receive demand/);

    await honestExchange(s);
    expect(inbox.max(), 'values in the handle inbox').to.equal(0);
    expect(loop.maxGapMs(), 'largest event-loop gap, ms').to.be.below(500);
  });

  it('regression: an ACK for values the owner never sent fails the remote with ERR_PROTOCOL', async () => {
    const s = await startServer();
    const acked = s.server.channel<number>('acked', 4);
    const loop = watchLoop();
    const hostile = await s.client();
    const handle = hostile.channel<number>('acked');
    await opened(handle);
    framesOf(handle).frame(FrameType.ACK, u32(5));
    await until(() => handle.closed, 5000, 'the handle to fail');
    const err = await rejection(handle.receive());
    expect(err.code).to.equal('ERR_PROTOCOL');
    expect(err.message).to.match(/ACK of 5 with 0/);

    await honestExchange(s);
    // the channel itself is untouched and serves others
    expect(acked.trySend(1)).to.equal(true);
    const other = await s.client();
    expect(await other.channel<number>('acked').receive()).to.equal(1);
    expect(loop.maxGapMs(), 'largest event-loop gap, ms').to.be.below(500);
  });

  it('regression: an ACK for values the remote never sent fails the owner-side handle with ERR_PROTOCOL', async () => {
    const s = await startServer();
    const mailbox = s.server.channel<Channel<number>>('mailbox', 1);
    const loop = watchLoop();
    const hostile = await s.client();
    const mine = new Channel<number>(4);
    await hostile.channel<Channel<number>>('mailbox').send(mine);
    const handle = (await mailbox.receive()) as unknown as RemoteChannel<number>;
    await opened(handle);
    framesOf(exporterOf(hostile, mine as Channel<unknown>)).frame(FrameType.ACK, u32(3));
    await until(() => handle.closed, 5000, 'the handle to fail');
    const err = await rejection(handle.send(1));
    expect(err.code).to.equal('ERR_PROTOCOL');
    expect(err.message).to.match(/ACK of 3 with 0/);

    await honestExchange(s);
    expect(loop.maxGapMs(), 'largest event-loop gap, ms').to.be.below(500);
  });
});

// ---- the finding as reported: a raw HTTP/2 client, no netchan code on its side ----

/** Opens a session and a stream on `netchan.out` with node:http2 alone; returns that stream and what it reads. */
async function rawClusterStream(url: string, ca: string): Promise<{ stream: http2.ClientHttp2Stream; body: () => Buffer; closed: Promise<void> }> {
  const h2 = http2.connect(url, { ca });
  h2.on('error', () => undefined);
  onTeardown(() => new Promise<void>((resolve) => (h2.destroyed ? resolve() : (h2.once('close', () => resolve()), h2.destroy()))));
  const open = (headers: Record<string, string>) => {
    const stream = h2.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', ...headers }, { endStream: false });
    stream.on('error', () => undefined);
    const response = new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      stream.once('response', resolve);
      stream.once('close', () => reject(new Error('stream closed before a response')));
    });
    return { stream, response };
  };
  const control = open({ 'netchan-kind': 'session' });
  const session = String((await control.response)['netchan-session']);
  const out = open({ 'netchan-kind': 'channel', 'netchan-session': session, 'netchan-stream': 'c1', 'netchan-name': 'netchan.out' });
  expect((await out.response)[':status']).to.equal(200);
  const chunks: Buffer[] = [];
  out.stream.on('data', (c: Buffer) => chunks.push(c));
  const closed = new Promise<void>((resolve) => out.stream.once('close', () => resolve()));
  return { stream: out.stream, body: () => Buffer.concat(chunks), closed };
}

describe('credits enforced against a raw HTTP/2 client', function () {
  this.timeout(30_000);
  afterEach(teardown);

  it('regression: one CREDIT of 0xffffffff from a raw HTTP/2 client gets ERROR ERR_PROTOCOL and a reset; the listen() server keeps serving', async () => {
    const { key, cert, caCert } = await testCertificates();
    const l = await listen<number>('127.0.0.1:0', { key, cert });
    onTeardown(() => l.close());
    const url = `https://localhost:${l.port}/`;
    let stop = false;
    onTeardown(() => {
      stop = true;
    });
    const producer = (async () => {
      for (let i = 0; i < 200_000 && !stop; i++) await l.send.send(i);
    })().catch(() => undefined);
    const loop = watchLoop();

    const raw = await rawClusterStream(url, caCert);
    raw.stream.write(encodeFrame(FrameType.CREDIT, u32(0xffffffff)));
    await raw.closed;
    const frames = framesIn(raw.body());
    const last = frames[frames.length - 1];
    expect(last?.type, 'the last frame').to.equal(FrameType.ERROR);
    expect((codec.decode(last!.payload) as { code: string }).code).to.equal('ERR_PROTOCOL');
    expect(frames.filter((f) => f.type === FrameType.VALUE), 'values sent to the offender').to.have.length(0);
    expect(raw.stream.rstCode).to.equal(http2.constants.NGHTTP2_INTERNAL_ERROR);

    const honest = await connect(url, { ca: caCert });
    onTeardown(() => honest.close());
    const h = honest.channel<number>('netchan.out');
    for (let i = 0; i < 20; i++) expect(await h.receive()).to.be.a('number');
    expect(loop.maxGapMs(), 'largest event-loop gap, ms').to.be.below(500);
    stop = true;
    l.send.close();
    await producer;
  });
});

// ---- one channel stream on an in-memory byte stream: the pumps and the window, turn by turn ----

/** A byte stream that takes every write at once and keeps it: only the turn budget holds writers back. */
/** A wire stream that keeps what is written to it and never ends by itself. */
function sinkStream(): { stream: WireStream; written: () => Buffer } {
  const chunks: Buffer[] = [];
  const bytes = new Duplex({
    writableHighWaterMark: 1 << 30,
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  const stream: WireStream = {
    bytes,
    cutOff: false,
    endedBy: () => netchanError(ErrorCodes.STREAM_RESET, 'stream reset'),
    reset: () => void bytes.destroy(),
    fail: (error) => void bytes.destroy(error),
  };
  return { stream, written: () => Buffer.concat(chunks) };
}

function memoryContext(): StreamContext {
  return { encode: (v) => codec.encode(v), decode: (b) => codec.decode(b), counters: emptyStats() };
}

const placeholder = { onFrame() {}, onStreamEnd() {}, onStreamError() {}, onStreamClose() {} };

function nextTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

describe('channel stream pumps and windows, on an in-memory stream', () => {
  const big = (i: number) => `${i}:${'x'.repeat(1024)}`;

  it('regression: the owner serves a whole receive window over several turns, not in one synchronous run', async () => {
    const { stream, written } = sinkStream();
    const ctx = memoryContext();
    const fs = new FramedStream(stream, new Flusher(), placeholder, 1 << 20, ctx.counters);
    const ch = new Channel<string>(4096);
    for (let i = 0; i < 4096; i++) ch.trySend(big(i));
    const ex = new ChannelExporter(fs, ctx, ch as Channel<unknown>, 'c1', () => undefined);
    fs.setSink(ex);
    ex.onFrame(FrameType.CREDIT, u32(4096));
    const firstTurn = ctx.counters.valuesOut;
    expect(firstTurn, 'values framed in the first turn').to.be.at.most(Math.ceil(TURN_BYTES / 1024) + 1);
    let turns = 1;
    for (; ctx.counters.valuesOut < 4096 && turns < 1000; turns++) await nextTurn();
    expect(ctx.counters.valuesOut).to.equal(4096);
    expect(turns, 'turns it took').to.be.greaterThan(4);
    await nextTurn();
    const values = framesIn(written()).filter((f) => f.type === FrameType.VALUE).map((f) => codec.decode(f.payload));
    expect(values).to.deep.equal(Array.from({ length: 4096 }, (_, i) => big(i)));
  });

  it('regression: a remote handle writes a queue of sends over several turns, not in one synchronous run', async () => {
    const { stream, written } = sinkStream();
    const ctx = memoryContext();
    const fs = new FramedStream(stream, new Flusher(), placeholder, 1 << 20, ctx.counters);
    const endpoint = new RemoteEndpoint<string>(fs, ctx, 'c1', {}, () => undefined);
    fs.setSink(endpoint);
    endpoint.open({ capacity: 4096, credits: 4096 });
    const rc = new RemoteChannel<string>(endpoint);
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 4096; i++) sends.push(rc.send(big(i)));
    expect(ctx.counters.valuesOut, 'values framed in the first turn').to.be.at.most(Math.ceil(TURN_BYTES / 1024) + 1);
    await Promise.all(sends);
    expect(ctx.counters.valuesOut).to.equal(4096);
    await nextTurn();
    const values = framesIn(written()).filter((f) => f.type === FrameType.VALUE).map((f) => codec.decode(f.payload));
    expect(values).to.deep.equal(Array.from({ length: 4096 }, (_, i) => big(i)));
  });

  it('regression: frames behind a value that waits for its references are held within the windows, not without end', () => {
    const { stream, written } = sinkStream();
    const never = new Promise<void>(() => undefined);
    const ctx: StreamContext = {
      encode: (v) => codec.encode(v),
      decode: () => {
        throw new PendingReferences(never);
      },
      counters: emptyStats(),
    };
    const fs = new FramedStream(stream, new Flusher(), placeholder, 1 << 20, ctx.counters);
    const ch = new Channel<string>(8); // 8 send credits
    const ex = new ChannelExporter(fs, ctx, ch as Channel<unknown>, 'c1', () => undefined);
    fs.setSink(ex);
    const backlog = () => (ex as unknown as { backlog: unknown[] | null }).backlog?.length ?? 0;
    for (let v = 0; v < 8; v++) {
      ex.onFrame(FrameType.VALUE, Buffer.from(codec.encode(`v${v}`)));
      for (let i = 0; i < 10_000; i++) {
        ex.onFrame(FrameType.CREDIT, u32(0));
        ex.onFrame(FrameType.ACK, u32(0));
        ex.onFrame(FrameType.CLOSE, Buffer.alloc(0));
      }
    }
    expect(backlog(), 'frames waiting').to.be.at.most(8 + 2);
    expect(fs.writable).to.equal(true);
    ex.onFrame(FrameType.VALUE, Buffer.from(codec.encode('one too many')));
    expect(fs.writable, 'a ninth value on 8 credits is a violation').to.equal(false);
    const frames = framesIn(written());
    expect((codec.decode(frames[frames.length - 1]!.payload) as { code: string }).code).to.equal('ERR_PROTOCOL');
  });

  it('outstanding receive demand may reach the receive window, not one more', async () => {
    const { stream, written } = sinkStream();
    const ctx = memoryContext();
    const fs = new FramedStream(stream, new Flusher(), placeholder, 1 << 20, ctx.counters);
    const ch = new Channel<number>(8);
    const ex = new ChannelExporter(fs, ctx, ch as Channel<unknown>, 'c1', () => undefined);
    fs.setSink(ex);
    const window = receiveWindow(8);
    expect(window).to.equal(8 + 4096);
    ex.onFrame(FrameType.CREDIT, u32(window - 1));
    ex.onFrame(FrameType.CREDIT, u32(1));
    expect(fs.writable, 'exactly the window is fine').to.equal(true);
    // values sent and acknowledged give their demand back
    for (let i = 0; i < 3; i++) ch.trySend(i);
    ex.onFrame(FrameType.ACK, u32(3));
    ex.onFrame(FrameType.CREDIT, u32(3));
    expect(fs.writable).to.equal(true);
    ex.onFrame(FrameType.CREDIT, u32(1));
    expect(fs.writable, 'one more is a violation').to.equal(false);
    await nextTurn();
    const frames = framesIn(written());
    const last = frames[frames.length - 1]!;
    expect(last.type).to.equal(FrameType.ERROR);
    expect((codec.decode(last.payload) as { code: string }).code).to.equal('ERR_PROTOCOL');
  });
});
