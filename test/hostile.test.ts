/**
 * Hostile and broken peers against a real TLS server: a raw `node:http2` client speaks the wire
 * protocol (docs/PROTOCOL.md) by hand where the netchan client never would misbehave. Each test
 * checks both sides of the bargain: the offender gets a clear error (a `netchan-error` header, an
 * `ERROR` frame `{code, message}`, a reset, or a NetchanError code on the client API), and nobody
 * else is hurt: a well-behaved session on the same server keeps exchanging values, and the values
 * already in the server's channels are still there, delivered exactly once.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { expect } from 'chai';
import { Channel, connect, type ChannelLike, type Session } from '../lib/index.js';
import { Codec } from '../lib/wire/codec.js';
import { generateCertificates } from '../lib/transport/devcert.js';
import { FrameType, encodeFrame } from '../lib/wire/frames.js';
import { RawStream } from './helpers/raw-stream.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, tick, until, type Started } from './helpers/net.js';
import { rejection } from './helpers/assert.js';
import { exchangeBothWays } from './helpers/watch.js';

const { NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR } = http2.constants;
const codec = new Codec();
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};
const range = (from: number, n: number): number[] => Array.from({ length: n }, (_, i) => from + i);


function nextImmediate(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

// ---- a raw HTTP/2 client that speaks the protocol by hand ----

class RawClient {
  private constructor(readonly h2: http2.ClientHttp2Session) {}

  static async connect(s: Started): Promise<RawClient> {
    const { caCert } = await testCertificates();
    const h2 = http2.connect(s.url, { ca: caCert });
    h2.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      h2.once('connect', () => resolve());
      h2.once('error', reject);
    });
    onTeardown(
      () =>
        new Promise<void>((resolve) => {
          if (h2.destroyed) return resolve();
          h2.once('close', () => resolve());
          h2.destroy();
        }),
    );
    return new RawClient(h2);
  }

  request(headers: Record<string, string>, options: { method?: string; end?: boolean } = {}): RawStream {
    const stream = this.h2.request({ ':method': options.method ?? 'POST', ':path': '/', ...headers }, { endStream: options.end ?? false });
    return new RawStream(stream);
  }

  /** Opens a session (its control stream stays open: ending it would end the session). */
  async session(): Promise<{ id: string; headers: http2.IncomingHttpHeaders; control: RawStream }> {
    const control = this.request({ 'netchan-version': '1', 'netchan-kind': 'session' });
    const headers = await control.opened();
    const id = headers['netchan-session'];
    expect(id).to.match(/^[0-9a-f]{32}$/);
    return { id: id as string, headers, control };
  }

  /** A channel stream of `session` with stream id `sid` and the given kind headers. */
  channel(session: string, sid: string, headers: Record<string, string>, options: { end?: boolean } = {}): RawStream {
    return this.request(
      { 'netchan-version': '1', 'netchan-kind': 'channel', 'netchan-session': session, 'netchan-stream': sid, ...headers },
      options,
    );
  }
}

/** The stream got exactly one ERROR `{code, message}` as its last frame, then RST_STREAM INTERNAL_ERROR. */
async function expectErrorFrameAndReset(rs: RawStream, code: string): Promise<{ code: string; message: string }> {
  await rs.closed;
  const frames = rs.frames();
  const errors = frames.filter((f) => f.type === FrameType.ERROR);
  expect(errors, 'ERROR frames').to.have.length(1);
  expect(frames[frames.length - 1]!.type, 'ERROR is the last frame').to.equal(FrameType.ERROR);
  const err = codec.decode(errors[0]!.payload) as { code: string; message: string };
  expect(Object.keys(err).sort()).to.deep.equal(['code', 'message']);
  expect(err.code).to.equal(code);
  expect(err.message).to.be.a('string').and.not.equal('');
  expect(rs.rstCode, 'RST_STREAM code').to.equal(NGHTTP2_INTERNAL_ERROR);
  expect(rs.endedByPeer, 'END_STREAM before the reset').to.equal(false);
  return err;
}

/** The stream was reset (RST_STREAM INTERNAL_ERROR) with no ERROR frame and no END_STREAM (§2.3, §2.4). */
async function expectResetWithoutErrorFrame(rs: RawStream): Promise<void> {
  await rs.closed;
  expect(rs.frames().filter((f) => f.type === FrameType.ERROR), 'ERROR frames').to.have.length(0);
  expect(rs.rstCode, 'RST_STREAM code').to.equal(NGHTTP2_INTERNAL_ERROR);
  expect(rs.endedByPeer, 'END_STREAM before the reset').to.equal(false);
}

/** The stream was refused: `status`, `netchan-error: code`, a message, a text body, no frames, clean close. */
async function expectRefused(rs: RawStream, status: number, code: string): Promise<void> {
  const headers = await rs.response;
  expect(headers[':status']).to.equal(status);
  expect(headers['netchan-error']).to.equal(code);
  expect(headers['netchan-message']).to.be.a('string').and.not.equal('');
  expect(headers['content-type']).to.equal('text/plain');
  await rs.closed;
  expect(rs.body.toString('utf8')).to.match(new RegExp(`^${code}: .+\\n$`));
  expect(rs.rstCode).to.equal(NGHTTP2_NO_ERROR);
}

// ---- the well-behaved bystander ----

interface Bystander {
  session: Session;
  /** `n` values client → server and `n` server → client on its own channels, checked in order. */
  exchange(n: number): Promise<void>;
}

async function bystander(s: Started, tag = 'bystander'): Promise<Bystander> {
  const up = s.server.channel<number>(`${tag}-up`, 4);
  const down = s.server.channel<number>(`${tag}-down`, 4);
  const session = await s.client();
  const upHandle = session.channel<number>(`${tag}-up`);
  const downHandle = session.channel<number>(`${tag}-down`);
  let next = 0;
  return {
    session,
    async exchange(n: number) {
      const values = range(next, n);
      next += n;
      await exchangeBothWays(values, { handle: upHandle, channel: up }, { handle: downHandle, channel: down });
      expect(session.closed).to.equal(false);
    },
  };
}

/** A buffered server channel holding `values` already. */
function prefilled<T>(s: Started, name: string, values: T[], capacity = 8): Channel<T> {
  const ch = s.server.channel<T>(name, capacity);
  for (const v of values) expect(ch.trySend(v)).to.equal(true);
  return ch;
}

/** `ch` holds exactly `expected`; a fresh handle of `session` receives them in order, once. */
async function expectDeliveredOnce<T>(session: Session, name: string, ch: Channel<T>, expected: T[]): Promise<void> {
  expect(ch.length, `values left in ${name}`).to.equal(expected.length);
  const handle = session.channel<T>(name);
  const got: T[] = [];
  for (let i = 0; i < expected.length; i++) got.push(await handle.receive());
  expect(got).to.deep.equal(expected);
  await tick(30);
  expect(ch.length, `${name} after draining`).to.equal(0);
  expect(handle.length, 'prefetched after draining').to.equal(0);
  handle.release();
}

/** The TLS socket under a client session (`h2.socket` is a proxy that refuses `destroy()`). */
function tlsSocketOf(session: Session): net.Socket {
  const h2 = (session as unknown as { wire: { h2: http2.ClientHttp2Session } }).wire.h2;
  const sym = Object.getOwnPropertySymbols(h2).find((s) => s.description === 'socket');
  expect(sym, 'the http2 session keeps its socket under Symbol(socket)').to.not.equal(undefined);
  return (h2 as unknown as Record<symbol, net.Socket>)[sym as symbol] as net.Socket;
}

function resourceCounts(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

function polluted(): boolean {
  return Object.prototype.hasOwnProperty.call(Object.prototype, 'polluted') || ({} as Record<string, unknown>).polluted !== undefined;
}

describe('hostile peers', function () {
  this.timeout(20_000);
  afterEach(teardown);

  describe('hostile MessagePack', () => {
    const cases: [what: string, payload: string, code: string][] = [
      ['the key __proto__', '81 a9 5f5f70726f746f5f5f 81 a8 706f6c6c75746564 c3', 'ERR_DECODE'],
      ['10,000-deep nesting', '91'.repeat(10_000) + 'c0', 'ERR_DEPTH_LIMIT'],
      ['an array declaring 4,294,967,295 entries', 'dd ffffffff 00', 'ERR_DECODE'],
      ['the unknown extension 0x72 (msgpackr record)', 'd4 72 00', 'ERR_UNKNOWN_EXTENSION'],
      ['the msgpackr error extension 0x65', 'd4 65 00 93 a1 61 a1 62 c0', 'ERR_UNKNOWN_EXTENSION'],
      ['the never-used byte 0xc1', 'c1', 'ERR_DECODE'],
      ['a trailing byte', '01 02', 'ERR_DECODE'],
      ['an empty payload', '', 'ERR_DECODE'],
    ];

    it('each hostile VALUE gets an ERROR with the codec code and a reset; the channel gets nothing, the session and others live on', async () => {
      const s = await startServer();
      const target = prefilled(s, 'target', [1, 2, 3]);
      prefilled(s, 'attacker-ok', ['still served'], 1);
      const by = await bystander(s);
      await by.exchange(10);
      const raw = await RawClient.connect(s);
      const { id } = await raw.session();
      const during = by.exchange(300);
      let n = 0;
      for (const [what, payload, code] of cases) {
        const rs = raw.channel(id, `c${++n}`, { 'netchan-name': 'target' });
        const headers = await rs.opened();
        expect(headers['netchan-capacity']).to.equal('8');
        rs.send(FrameType.VALUE, hex(payload));
        const err = await expectErrorFrameAndReset(rs, code).catch((e: Error) => {
          throw new Error(`${what}: ${e.message}`);
        });
        expect(err.code, what).to.equal(code);
        expect(polluted(), `Object.prototype after ${what}`).to.equal(false);
        expect(target.length, `target after ${what}`).to.equal(3);
      }
      await during;
      // only those streams failed: the attacker's session is still served
      expect(s.server.stats().sessions).to.equal(2);
      const ok = raw.channel(id, `c${++n}`, { 'netchan-name': 'attacker-ok' });
      await ok.opened();
      ok.send(FrameType.CREDIT, u32(1));
      await until(() => ok.values().length === 1, 5000, 'the attacker to be served');
      expect(ok.values()).to.deep.equal(['still served']);
      expect(s.server.stats().valuesIn).to.equal(310, 'only the bystander values were accepted');
      await by.exchange(20);
      await expectDeliveredOnce(by.session, 'target', target, [1, 2, 3]);
      expect(polluted()).to.equal(false);
    });

    it('a hostile CLOSE payload gets ERROR ERR_DECODE and a reset, and does not close the channel', async () => {
      const s = await startServer();
      const target = prefilled(s, 'target', [1, 2, 3]);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const { id } = await raw.session();
      const rs = raw.channel(id, 'c1', { 'netchan-name': 'target' });
      await rs.opened();
      rs.send(FrameType.CLOSE, hex('81 a9 5f5f70726f746f5f5f 81 a8 706f6c6c75746564 c3'));
      await expectErrorFrameAndReset(rs, 'ERR_DECODE');
      expect(target.closed).to.equal(false);
      expect(polluted()).to.equal(false);
      await by.exchange(20);
      await expectDeliveredOnce(by.session, 'target', target, [1, 2, 3]);
    });
  });

  describe('oversized frames', () => {
    it('a header declaring more than maxFrameBytes resets the stream at once (INTERNAL_ERROR, no ERROR frame); exactly maxFrameBytes is accepted', async () => {
      const s = await startServer({ maxFrameBytes: 4096 });
      const target = prefilled(s, 'target', [1, 2, 3]);
      const sink = s.server.channel<unknown>('sink', 4);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const { id, headers } = await raw.session();
      expect(headers['netchan-max-frame-bytes']).to.equal('4096');
      const during = by.exchange(300);

      // the header alone: the server must not wait for (or buffer) the 4097 bytes it announces
      const c1 = raw.channel(id, 'c1', { 'netchan-name': 'target' });
      await c1.opened();
      c1.sendBytes(hex('01 00001001'));
      await expectResetWithoutErrorFrame(c1);

      // length 0xffffffff with a few bytes behind it
      const c2 = raw.channel(id, 'c2', { 'netchan-name': 'target' });
      await c2.opened();
      c2.sendBytes(Buffer.concat([hex('01 ffffffff'), Buffer.alloc(64)]));
      await expectResetWithoutErrorFrame(c2);

      // frames before the oversized one are handed on, nothing after it
      const c3 = raw.channel(id, 'c3', { 'netchan-name': 'sink' });
      await c3.opened();
      c3.sendBytes(
        Buffer.concat([
          encodeFrame(FrameType.VALUE, codec.encode('before')),
          hex('01 00001001'),
          encodeFrame(FrameType.VALUE, codec.encode('after')),
        ]),
      );
      await expectResetWithoutErrorFrame(c3);
      expect(sink.length).to.equal(1);
      expect(await sink.receive()).to.equal('before');

      // a payload of exactly maxFrameBytes: a str 16 of 4093 bytes is 4096 bytes encoded
      const exact = Buffer.concat([hex('da 0ffd'), Buffer.alloc(4093, 0x61)]);
      expect(exact.length).to.equal(4096);
      const c4 = raw.channel(id, 'c4', { 'netchan-name': 'sink' });
      await c4.opened();
      c4.send(FrameType.VALUE, exact);
      expect(await sink.receive()).to.equal('a'.repeat(4093));
      c4.stream.end();
      await c4.closed;
      expect(c4.rstCode).to.equal(NGHTTP2_NO_ERROR);

      await during;
      expect(target.length).to.equal(3);
      expect(s.server.stats().sessions).to.equal(2);
      // the server still takes new sessions
      const late = await bystander(s, 'late');
      await late.exchange(10);
      await by.exchange(10);
      await expectDeliveredOnce(by.session, 'target', target, [1, 2, 3]);
    });

    it('a value above the server maxFrameBytes is refused by the client API with ERR_VALUE_TOO_LARGE before it is sent; handle and session stay usable', async () => {
      const s = await startServer({ maxFrameBytes: 4096 });
      const buffered = s.server.channel<unknown>('buffered', 4);
      const rendezvous = s.server.channel<unknown>('rendezvous', 0);
      const by = await bystander(s);
      // the client's own limit is the default 1 MiB: it learns the server's from netchan-max-frame-bytes
      const session = await s.client();
      const big = 'x'.repeat(5000);
      const b = session.channel<unknown>('buffered');
      const r = session.channel<unknown>('rendezvous');
      for (const h of [b, r]) {
        const err = await rejection(h.send(big));
        expect(err.code).to.equal('ERR_VALUE_TOO_LARGE');
        expect(err.message).to.match(/4096/);
        expect(err.mayHaveBeenDelivered).to.equal(false);
      }
      // the next small values go through on the same handles
      await b.send('small');
      expect(await buffered.receive()).to.equal('small');
      const sent = r.send('small too');
      expect(await rendezvous.receive()).to.equal('small too');
      await sent;
      expect(buffered.length).to.equal(0);
      // a client with a smaller limit of its own refuses the same way
      const strict = await s.client({ maxFrameBytes: 1024 });
      const sh = strict.channel<unknown>('buffered');
      expect((await rejection(sh.send('y'.repeat(2000)))).code).to.equal('ERR_VALUE_TOO_LARGE');
      await sh.send('fits');
      expect(await buffered.receive()).to.equal('fits');
      expect(session.closed).to.equal(false);
      await by.exchange(20);
    });

    it('a value the server cannot send fails that handle with ERR_VALUE_TOO_LARGE and stays in the channel', async () => {
      const s = await startServer({ maxFrameBytes: 4096 });
      const out = prefilled<unknown>(s, 'out', ['x'.repeat(5000), 'next'], 4);
      const other = prefilled(s, 'other', [7], 1);
      const by = await bystander(s);
      const session = await s.client();
      const h = session.channel<unknown>('out');
      const err = await rejection(h.receive());
      expect(err.code).to.equal('ERR_VALUE_TOO_LARGE');
      expect((await rejection(h.receive())).code).to.equal('ERR_VALUE_TOO_LARGE');
      // nothing was lost: the value went back to the head of the channel, in order
      await until(() => out.length === 2, 5000, 'the value to go back');
      expect((await out.receive() as string).length).to.equal(5000);
      expect(await out.receive()).to.equal('next');
      // the session is fine
      expect(session.closed).to.equal(false);
      expect(await session.channel<number>('other').receive()).to.equal(7);
      expect(other.length).to.equal(0);
      await by.exchange(20);
    });
  });

  describe('malformed frames', () => {
    it('a CREDIT with a 3-byte payload gets ERROR ERR_PROTOCOL; values taken but not acknowledged go back in order, acknowledged ones do not', async () => {
      const s = await startServer();
      const work = prefilled(s, 'work', [0, 1, 2, 3, 4]);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const { id } = await raw.session();
      const rs = raw.channel(id, 'c1', { 'netchan-name': 'work' });
      await rs.opened();
      rs.send(FrameType.CREDIT, u32(2));
      await until(() => rs.values().length === 2, 5000, 'two values');
      expect(rs.values()).to.deep.equal([0, 1]);
      expect(work.length).to.equal(3);
      // ACK 1 (value 0 handed to "the program"), then the malformed CREDIT, in one write
      rs.sendBytes(Buffer.concat([encodeFrame(FrameType.ACK, u32(1)), encodeFrame(FrameType.CREDIT, hex('000001'))]));
      const err = await expectErrorFrameAndReset(rs, 'ERR_PROTOCOL');
      expect(err.message).to.match(/3 payload bytes/);
      expect(rs.values()).to.deep.equal([0, 1]);
      await by.exchange(20);
      await expectDeliveredOnce(by.session, 'work', work, [1, 2, 3, 4]);
    });

    it('unknown or misplaced frame types and bad count lengths get ERROR ERR_PROTOCOL on that stream only', async () => {
      const s = await startServer();
      const target = prefilled(s, 'target', [1, 2, 3]);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const { id } = await raw.session();
      const during = by.exchange(200);
      const cases: [string, Buffer][] = [
        ['unknown type 0x09', encodeFrame(0x09, Buffer.alloc(0))],
        ['unknown type 0x09 with a payload', encodeFrame(0x09, hex('01020304'))],
        ['type 0x00', encodeFrame(0x00, Buffer.alloc(0))],
        ['PING on a channel stream', encodeFrame(FrameType.PING, Buffer.alloc(8))],
        ['ACK with 5 payload bytes', encodeFrame(FrameType.ACK, hex('0000000100'))],
        ['CREDIT with no payload', encodeFrame(FrameType.CREDIT, Buffer.alloc(0))],
      ];
      let n = 0;
      for (const [what, bytes] of cases) {
        const rs = raw.channel(id, `c${++n}`, { 'netchan-name': 'target' });
        await rs.opened();
        rs.sendBytes(bytes);
        await expectErrorFrameAndReset(rs, 'ERR_PROTOCOL').catch((e: Error) => {
          throw new Error(`${what}: ${e.message}`);
        });
        expect(target.length, what).to.equal(3);
      }
      await during;
      expect(s.server.stats().sessions).to.equal(2);
      await expectDeliveredOnce(by.session, 'target', target, [1, 2, 3]);
    });

    it('a stream that ends inside a frame is reset (ERR_FRAME_TRUNCATED: INTERNAL_ERROR, no ERROR frame)', async () => {
      const s = await startServer();
      const target = prefilled(s, 'target', [1, 2, 3]);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const { id } = await raw.session();
      const rs = raw.channel(id, 'c1', { 'netchan-name': 'target' });
      await rs.opened();
      rs.sendBytes(hex('01 00000006 de00'));
      rs.stream.end();
      await expectResetWithoutErrorFrame(rs);
      expect(target.length).to.equal(3);
      await by.exchange(20);
      await expectDeliveredOnce(by.session, 'target', target, [1, 2, 3]);
    });
  });

  describe('refused streams', () => {
    it('unknown session, wrong version, GET, bad kind and bad stream headers are refused with their status and code', async () => {
      const s = await startServer();
      const target = prefilled(s, 'target', [1, 2, 3]);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const { id } = await raw.session();
      const base = s.server.stats();
      const v1 = { 'netchan-version': '1' };
      const ch = { 'netchan-kind': 'channel', 'netchan-stream': 'c1', 'netchan-name': 'target' };
      const end = { end: true };
      await expectRefused(raw.request({ ...v1, ...ch, 'netchan-session': 'f'.repeat(32) }, end), 404, 'ERR_UNKNOWN_SESSION');
      await expectRefused(raw.request({ ...v1, ...ch }, end), 404, 'ERR_UNKNOWN_SESSION');
      await expectRefused(raw.request({ 'netchan-version': '2', 'netchan-kind': 'session' }, end), 400, 'ERR_PROTOCOL');
      await expectRefused(raw.request({ 'netchan-kind': 'session' }, end), 400, 'ERR_PROTOCOL');
      await expectRefused(raw.request({ 'netchan-version': '2', ...ch, 'netchan-session': id }, end), 400, 'ERR_PROTOCOL');
      await expectRefused(raw.request({ ...v1, 'netchan-kind': 'session' }, { method: 'GET', end: true }), 405, 'ERR_PROTOCOL');
      await expectRefused(raw.request({ ...v1, ...ch, 'netchan-session': id }, { method: 'GET', end: true }), 405, 'ERR_PROTOCOL');
      await expectRefused(raw.request({ ...v1, 'netchan-kind': 'session', ':path': '/elsewhere' }, end), 404, 'ERR_NOT_FOUND');
      await expectRefused(raw.request({ ...v1, 'netchan-kind': 'sideways', 'netchan-session': id, 'netchan-stream': 'c1' }, end), 400, 'ERR_PROTOCOL');
      await expectRefused(raw.channel(id, 'c1', {}, end), 400, 'ERR_PROTOCOL');
      await expectRefused(raw.request({ ...v1, 'netchan-kind': 'channel', 'netchan-session': id, 'netchan-name': 'target' }, end), 400, 'ERR_PROTOCOL');
      await expectRefused(raw.channel(id, 'x'.repeat(65), { 'netchan-name': 'target' }, end), 400, 'ERR_PROTOCOL');
      await expectRefused(raw.channel(id, 'c1', { 'netchan-name': 'nope' }, end), 404, 'ERR_UNKNOWN_CHANNEL');
      // a stream id in use cannot be taken over; the stream that holds it keeps working
      const c1 = raw.channel(id, 'c1', { 'netchan-name': 'target' });
      await c1.opened();
      await expectRefused(raw.channel(id, 'c1', { 'netchan-name': 'target' }, end), 400, 'ERR_PROTOCOL');
      c1.send(FrameType.CREDIT, u32(1));
      await until(() => c1.values().length === 1, 5000, 'c1 to be served');
      expect(c1.values()).to.deep.equal([1]);
      c1.send(FrameType.ACK, u32(1));
      c1.stream.end();
      await c1.closed;
      // refused streams leave nothing behind; the attacker's session lives on
      await until(() => s.server.stats().streams === base.streams, 5000, 'streams back to the baseline');
      expect(s.server.stats().sessions).to.equal(2);
      expect(s.server.stats().channels).to.equal(base.channels);
      await by.exchange(20);
      await expectDeliveredOnce(by.session, 'target', target, [2, 3]);
    });

    it('an unknown channel name through the client API fails that handle only, with ERR_UNKNOWN_CHANNEL', async () => {
      const s = await startServer();
      const ok = s.server.channel<number>('ok', 1);
      const back = prefilled(s, 'back', [5], 1);
      const session = await s.client();
      const bad = session.channel<number>('nope');
      const good = session.channel<number>('ok');
      const err = await rejection(bad.receive());
      expect(err.code).to.equal('ERR_UNKNOWN_CHANNEL');
      expect(err.message).to.contain('nope');
      expect((await rejection(bad.send(1))).code).to.equal('ERR_UNKNOWN_CHANNEL');
      await good.send(41);
      expect(await ok.receive()).to.equal(41);
      expect(await session.channel<number>('back').receive()).to.equal(5);
      expect(back.length).to.equal(0);
      expect(session.closed).to.equal(false);
      // the failed handle is gone from the books
      await until(() => session.stats().channels === 2, 5000, 'the failed handle to be released');
    });
  });

  describe('unknown references', () => {
    it('netchan-ref naming no pending reference of the session is refused 404 ERR_UNKNOWN_REFERENCE; references are per session and one-shot', async () => {
      const s = await startServer();
      const lobby = s.server.channel<ChannelLike<string>>('lobby', 1);
      const room = new Channel<string>(4);
      await lobby.send(room);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const a = await raw.session();
      const b = await raw.session();
      await expectRefused(raw.channel(a.id, 'c1', { 'netchan-ref': 's999' }, { end: true }), 404, 'ERR_UNKNOWN_REFERENCE');
      // session a takes a server-owned channel out of the lobby: the value names reference s1 of a
      const l = raw.channel(a.id, 'c2', { 'netchan-name': 'lobby' });
      await l.opened();
      l.send(FrameType.CREDIT, u32(1));
      await until(() => l.frames().some((f) => f.type === FrameType.VALUE), 5000, 'the lobby value');
      const ref = codec.decode(l.frames().find((f) => f.type === FrameType.VALUE)!.payload, {
        encodeReference: () => ({}),
        decodeReference: (kind, data) => ({ kind, ...data }),
      });
      expect(ref).to.deep.equal({ kind: 'channel', o: 's', id: 's1' });
      l.send(FrameType.ACK, u32(1));
      await until(() => s.server.stats().pendingReferences === 1, 5000, 'the pending reference');
      // session b cannot use a's reference
      await expectRefused(raw.channel(b.id, 'c1', { 'netchan-ref': 's1' }, { end: true }), 404, 'ERR_UNKNOWN_REFERENCE');
      expect(s.server.stats().pendingReferences).to.equal(1);
      // a can, once
      const r = raw.channel(a.id, 'c3', { 'netchan-ref': 's1' });
      const headers = await r.opened();
      expect(headers['netchan-capacity']).to.equal('4');
      expect(s.server.stats().pendingReferences).to.equal(0);
      r.send(FrameType.VALUE, codec.encode('through the reference'));
      expect(await room.receive()).to.equal('through the reference');
      await expectRefused(raw.channel(a.id, 'c4', { 'netchan-ref': 's1' }, { end: true }), 404, 'ERR_UNKNOWN_REFERENCE');
      await by.exchange(20);
    });

    it('references inside a VALUE that the session does not hold get ERROR ERR_UNKNOWN_REFERENCE, and the frames behind them are not delivered', async () => {
      const s = await startServer({ referenceTimeoutMs: 300 });
      const target = prefilled<unknown>(s, 'target', [1, 2, 3]);
      const by = await bystander(s);
      const raw = await RawClient.connect(s);
      const { id } = await raw.session();
      const withRef = (data: Record<string, unknown>) =>
        codec.encode({ ch: new Channel() }, { encodeReference: () => data, decodeReference: () => undefined });
      const cases: [string, Record<string, unknown>][] = [
        ['a server-owned reference named by the client', { o: 's', id: 's1' }],
        ['a back-reference to no stream of this session', { b: 'c999' }],
        ['a client-owned stream that never arrives', { o: 'c', id: 'c999' }],
      ];
      let n = 0;
      const during = by.exchange(200);
      for (const [what, data] of cases) {
        const rs = raw.channel(id, `c${++n}`, { 'netchan-name': 'target' });
        await rs.opened();
        rs.sendBytes(Buffer.concat([encodeFrame(FrameType.VALUE, withRef(data)), encodeFrame(FrameType.VALUE, codec.encode('behind it'))]));
        await expectErrorFrameAndReset(rs, 'ERR_UNKNOWN_REFERENCE').catch((e: Error) => {
          throw new Error(`${what}: ${e.message}`);
        });
        expect(target.length, what).to.equal(3);
      }
      await during;
      await expectDeliveredOnce(by.session, 'target', target, [1, 2, 3]);
    });
  });

  describe('a dropped connection (a session without resumption: reconnect: false)', () => {
    /** A victim session holding 7 prefetched values of `work` after its program received value 0. */
    async function victimWithPrefetch(s: Started) {
      const work = prefilled(s, 'work', range(0, 8));
      const quiet = s.server.channel<number>('quiet', 0);
      const victim = await s.client({ reconnect: false });
      const h = victim.channel<number>('work');
      const pending = victim.channel<number>('quiet').receive();
      pending.catch(() => undefined);
      return { work, quiet, victim, h, pending };
    }

    /** Every byte every client wrote has been read (and handled) by the server. */
    async function serverCaughtUp(s: Started, ...sessions: Session[]): Promise<void> {
      await nextImmediate(); // the flush of this turn (acks, credits) has been written
      await until(
        () => s.server.stats().bytesIn === sessions.reduce((sum, x) => sum + x.stats().bytesOut, 0),
        5000,
        'the server to read everything the clients wrote',
      );
    }

    it('fails pending operations with ERR_CONNECTION_LOST, ends the server session, and puts back exactly the values prefetched but not received', async () => {
      const s = await startServer();
      const by = await bystander(s);
      await by.exchange(10);
      const { work, victim, h, pending } = await victimWithPrefetch(s);
      expect(await h.receive()).to.equal(0);
      await until(() => work.length === 0 && h.length === 7, 5000, 'the prefetch');
      await serverCaughtUp(s, by.session, victim); // the ACK of value 0 has arrived
      expect(s.server.stats().sessions).to.equal(2);

      tlsSocketOf(victim).destroy();

      const err = await rejection(pending);
      expect(err.code).to.equal('ERR_CONNECTION_LOST');
      // nothing of the prefetch is handed out any more: the owner took it back
      expect(h.length).to.equal(0);
      expect((await rejection(h.receive())).code).to.equal('ERR_CONNECTION_LOST');
      const sendErr = await rejection(h.send(99));
      expect(sendErr.code).to.equal('ERR_CONNECTION_LOST');
      expect(sendErr.mayHaveBeenDelivered).to.equal(false);
      expect(victim.closed).to.equal(true);
      await until(() => s.server.stats().sessions === 1, 5000, 'the server to end the session');
      await until(() => work.length === 7, 5000, 'the prefetched values to come back');
      await by.exchange(20);
      // value 0 was acknowledged: it is not delivered again
      await expectDeliveredOnce(by.session, 'work', work, [1, 2, 3, 4, 5, 6, 7]);
      expect(victim.stats().streams).to.equal(0);
      expect(victim.stats().channels).to.equal(0);
    });

    it('a value whose ACK had not left when the connection dropped goes back too (at-least-once, docs/PROTOCOL.md §5.2)', async () => {
      const s = await startServer();
      const by = await bystander(s);
      const { work, victim, h, pending } = await victimWithPrefetch(s);
      expect(h.tryReceive().ok).to.equal(false); // starts the prefetch without a receiver
      await until(() => work.length === 0 && h.length === 8, 5000, 'the prefetch');
      await serverCaughtUp(s, by.session, victim);
      const got = h.tryReceive();
      expect(got).to.deep.equal({ ok: true, value: 0 });
      // same turn: the ACK of value 0 is still batched, and never leaves
      tlsSocketOf(victim).destroy();
      expect((await rejection(pending)).code).to.equal('ERR_CONNECTION_LOST');
      await until(() => s.server.stats().sessions === 1, 5000, 'the server to end the session');
      await until(() => work.length === 8, 5000, 'the unacknowledged values to come back');
      // the program has value 0, and so will the next receiver: delivered twice
      await expectDeliveredOnce(by.session, 'work', work, range(0, 8));
      await by.exchange(20);
    });
  });

  describe('TLS', () => {
    it('a CA that did not sign the server certificate fails with ERR_TLS, before any session exists', async () => {
      const s = await startServer();
      const by = await bystander(s);
      const stranger = await generateCertificates();
      const err = await rejection(connect(s.url, { ca: stranger.caCert }));
      expect(err.code).to.equal('ERR_TLS');
      // no CA at all: the system store does not know the development CA either
      expect((await rejection(connect(s.url))).code).to.equal('ERR_TLS');
      // the right CA but another host name
      const { caCert } = await testCertificates();
      expect((await rejection(connect(s.url, { ca: caCert, servername: 'elsewhere.example' }))).code).to.equal('ERR_TLS');
      expect(s.server.stats().sessions).to.equal(1);
      await by.exchange(20);
    });

    it('a pin equal to the server certificate fingerprint, without a CA, connects and exchanges values', async () => {
      const s = await startServer();
      const ch = s.server.channel<string>('pinned', 1);
      const { fingerprint } = await testCertificates();
      for (const pin of [fingerprint, fingerprint.replace(/:/g, '').toLowerCase()]) {
        const session = await connect(s.url, { pin });
        onTeardown(() => session.close());
        const h = session.channel<string>('pinned');
        await h.send(`via ${pin.length}`);
        expect(await ch.receive()).to.equal(`via ${pin.length}`);
        await ch.send('back');
        expect(await h.receive()).to.equal('back');
        await session.close();
      }
    });

    it('a wrong pin fails with ERR_PIN_MISMATCH, with or without a CA', async () => {
      const s = await startServer();
      const by = await bystander(s);
      const { caCert } = await testCertificates();
      const wrong = '00'.repeat(32);
      const err = await rejection(connect(s.url, { pin: wrong }));
      expect(err.code).to.equal('ERR_PIN_MISMATCH');
      expect((await rejection(connect(s.url, { pin: wrong, ca: caCert }))).code).to.equal('ERR_PIN_MISMATCH');
      expect((await rejection(connect(s.url, { pin: 'not a fingerprint' }))).code).to.equal('ERR_INVALID_ARGUMENT');
      expect(s.server.stats().sessions).to.equal(1);
      await by.exchange(20);
    });

    it('a port nobody listens on fails with ERR_CONNECT', async () => {
      const probe = net.createServer();
      await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
      const { port } = probe.address() as net.AddressInfo;
      await new Promise<void>((r) => probe.close(() => r()));
      const { caCert } = await testCertificates();
      const err = await rejection(connect(`https://localhost:${port}/`, { ca: caCert }));
      expect(err.code).to.equal('ERR_CONNECT');
    });
  });

  describe('leaks', () => {
    it('500 channels and 50 sessions opened and closed leave stats, timers and sockets at their baseline', async () => {
      const s = await startServer();
      const named = s.server.channel<number>('named', 4);
      const requests = s.server.channel<{ n: number; reply: ChannelLike<number> }>('rpc', 64);
      (async () => {
        for await (const { n, reply } of requests) {
          await reply.send(n + 1);
          reply.close();
        }
      })().catch(() => undefined);
      const main = await s.client();
      const rpc = main.channel<{ n: number; reply: ChannelLike<number> }>('rpc');
      const warm = new Channel<number>(1);
      await rpc.send({ n: 0, reply: warm });
      expect(await warm.receive()).to.equal(1);
      await until(() => s.server.stats().pendingReferences === 0 && main.stats().channels === 1, 5000, 'the warm-up to settle');
      await tick(20);
      const baseServer = s.server.stats();
      const baseClient = main.stats();
      const baseResources = resourceCounts();

      // 250 named-channel handles: half send, half receive (with prefetch), all released
      for (let i = 0; i < 250; i += 50) {
        await Promise.all(
          range(i, 50).map(async (k) => {
            const h = main.channel<number>('named');
            if (k % 2 === 0) {
              await h.send(k);
            } else {
              await named.send(k);
              expect(await h.receive()).to.be.a('number');
            }
            h.release();
          }),
        );
        while (named.length > 0) named.tryReceive();
      }
      // 250 reply channels
      for (let i = 0; i < 250; i += 50) {
        await Promise.all(
          range(i, 50).map(async (k) => {
            const reply = new Channel<number>(1);
            await rpc.send({ n: k, reply });
            expect(await reply.receive()).to.equal(k + 1);
          }),
        );
      }
      // 50 sessions, plus a few that fail TLS
      const { caCert } = await testCertificates();
      for (let i = 0; i < 50; i += 10) {
        await Promise.all(
          range(i, 10).map(async (k) => {
            const c = await connect(s.url, { ca: caCert });
            const h = c.channel<number>('named');
            await h.send(1000 + k);
            await c.close();
          }),
        );
        while (named.length > 0) named.tryReceive();
      }
      for (let i = 0; i < 5; i++) expect((await rejection(connect(s.url, { pin: '00'.repeat(32) }))).code).to.equal('ERR_PIN_MISMATCH');

      const keys = ['streams', 'channels', 'byteStreams', 'sessions', 'pendingReferences'] as const;
      const pick = (x: Record<(typeof keys)[number], number>) => Object.fromEntries(keys.map((k) => [k, x[k]]));
      await until(
        () => JSON.stringify(pick(s.server.stats())) === JSON.stringify(pick(baseServer)) && JSON.stringify(pick(main.stats())) === JSON.stringify(pick(baseClient)),
        10_000,
        'stats to return to the baseline',
      );
      expect(pick(s.server.stats())).to.deep.equal(pick(baseServer));
      expect(pick(main.stats())).to.deep.equal(pick(baseClient));
      expect(s.server.stats().valuesIn).to.be.at.least(baseServer.valuesIn + 125 + 250 + 50);

      const settled = () => {
        const now = resourceCounts();
        return (now.Timeout ?? 0) <= (baseResources.Timeout ?? 0) && (now.TCPSocketWrap ?? 0) <= (baseResources.TCPSocketWrap ?? 0);
      };
      await until(settled, 5000, 'timers and sockets to return to the baseline').catch(() => undefined);
      // (unref'd timers do not show here: getActiveResourcesInfo counts only ref'd ones)
      const now = resourceCounts();
      expect(now.Timeout ?? 0, `Timeout entries, baseline ${JSON.stringify(baseResources)}`).to.be.at.most(baseResources.Timeout ?? 0);
      expect(now.TCPSocketWrap ?? 0, `TCPSocketWrap entries, baseline ${JSON.stringify(baseResources)}`).to.be.at.most(baseResources.TCPSocketWrap ?? 0);
      expect(baseResources.TCPSocketWrap, 'the main session and its server side').to.equal(2);
      // and the long-lived session still works
      const last = new Channel<number>(1);
      await rpc.send({ n: 41, reply: last });
      expect(await last.receive()).to.equal(42);
    });
  });
});
