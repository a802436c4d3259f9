/**
 * Pair streams (docs/PROTOCOL.md §5.5): a `dial` client's two channels on one channel stream.
 * Both directions on the one stream over every transport, each channel closed or let go of on
 * its own, the stream gone once both handles are, the worked exchange of test/vectors/pair.json
 * spoken by a raw HTTP/2 client, and hostile pair streams failing with a NetchanError code while
 * the session's other streams carry on.
 */
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import { runInNewContext } from 'node:vm';
import v8 from 'node:v8';
import { expect } from 'chai';
import { dial, listen, type Channel, type RemoteChannel, type Session } from '../lib/index.js';
import type { FramedStream } from '../lib/session/framed-stream.js';
import { Codec } from '../lib/wire/codec.js';
import { FrameType, encodeFrame } from '../lib/wire/frames.js';
import { rejection } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { RawStream } from './helpers/raw-stream.js';
import { onTeardown, startServer, teardown, until, useTransport, type Started, type TestTransport } from './helpers/net.js';

const codec = new Codec();
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

interface Step {
  step: string;
  from: 'client' | 'server';
  hex: string;
}
const steps = JSON.parse(readFileSync(new URL('./vectors/pair.json', import.meta.url), 'utf8')) as Step[];

/** The FramedStream under a pair handle: both handles of a pair write through it. */
function pairStream(handle: object): FramedStream {
  const half = (handle as unknown as { endpoint: { fs: { pair: { fs: FramedStream } } } }).endpoint.fs;
  return half.pair.fs;
}

/** Resolves once the server has answered the pair's stream. */
async function opened(handle: object): Promise<void> {
  await until(() => (handle as unknown as { endpoint: { opened: boolean } }).endpoint.opened, 5000, 'the pair stream to open');
}

/** The server's streams open now (control streams included). */
const serverStreams = (s: Started): number => s.server.stats().streams;

/** A server exporting `out` (the clients receive from it) and `in` (they send into it). */
async function pairServer(capacity = 4): Promise<{ s: Started; out: Channel<number>; into: Channel<number> }> {
  const s = await startServer();
  return { s, out: s.server.channel<number>('out', capacity), into: s.server.channel<number>('in', capacity) };
}

function pairOf(session: Session): { receive: RemoteChannel<number>; send: RemoteChannel<number> } {
  return session.pair<number>('out', 'in');
}

const transports: TestTransport[] = ['h2', 'ws', 'memory'];
for (const transport of transports) {
  describe(`pair streams over ${transport} (docs/PROTOCOL.md §5.5)`, function () {
    this.timeout(30_000);
    before(() => useTransport(transport));
    after(() => useTransport('h2'));
    afterEach(teardown);

    it('one stream carries both directions: 3 clients each hold 2 server streams (session, pair), not 3', async () => {
      const { s, out, into } = await pairServer();
      const clients = await Promise.all([0, 1, 2].map(async () => pairOf(await s.client())));
      // each client echoes what it receives, tagged with its number
      clients.forEach(({ receive, send }, c) => {
        void (async () => {
          for await (const v of receive) await send.send(1000 * (c + 1) + v);
        })().catch(() => undefined);
      });
      const producer = (async () => {
        for (let i = 0; i < 300; i++) await out.send(i);
      })();
      const echoed: number[] = [];
      for (let i = 0; i < 300; i++) echoed.push(await into.receive());
      await producer;
      expect(echoed.map((v) => v % 1000).sort((a, b) => a - b)).to.deep.equal(Array.from({ length: 300 }, (_, i) => i));
      expect(new Set(echoed.map((v) => Math.floor(v / 1000))).size, 'every client took part').to.equal(3);
      expect(serverStreams(s)).to.equal(6);
      expect(s.server.stats().sessions).to.equal(3);
    });

    it('a handle does only its own direction: send on the receive handle, receive on the send handle reject with ERR_INVALID_ARGUMENT', async () => {
      const { s } = await pairServer();
      const { receive, send } = pairOf(await s.client());
      const e1 = await rejection(receive.send(1));
      expect(e1.code).to.equal('ERR_INVALID_ARGUMENT');
      expect(e1.mayHaveBeenDelivered).to.equal(false);
      expect(() => receive.trySend(1)).to.throw(/only receives/);
      expect((await rejection(send.receive())).code).to.equal('ERR_INVALID_ARGUMENT');
      expect(() => send.tryReceive()).to.throw(/only sends/);
      expect(() => send[Symbol.asyncIterator]()).to.throw(/only sends/);
    });

    it('closing the send handle closes the server\'s receive channel only: the client still receives, and the stream goes once the other channel closes and drains', async () => {
      const { s, out, into } = await pairServer();
      const { receive, send } = pairOf(await s.client());
      await send.send(1);
      send.close();
      expect(await into.receive()).to.equal(1);
      await until(() => into.closed, 5000, 'the server\'s receive channel to close');
      expect((await rejection(send.send(2))).code).to.equal('ERR_CHANNEL_CLOSED');
      await out.send(7);
      expect(await receive.receive()).to.equal(7);
      expect(receive.closed).to.equal(false);
      await out.send(8);
      out.close();
      const rest: number[] = [];
      for await (const v of receive) rest.push(v);
      expect(rest).to.deep.equal([8]);
      expect((await rejection(receive.receive())).code).to.equal('ERR_CHANNEL_CLOSED');
      await until(() => serverStreams(s) === 1, 5000, 'the pair stream to go');
    });

    it('closing the receive handle closes the server\'s send channel only: the client\'s sends go on', async () => {
      const { s, out, into } = await pairServer();
      const { receive, send } = pairOf(await s.client());
      await out.send(1);
      expect(await receive.receive()).to.equal(1);
      receive.close(new Error('enough'));
      await until(() => out.closed, 5000, 'the server\'s send channel to close');
      expect(out.closeReason?.message).to.equal('enough');
      const end = await rejection(receive.receive());
      expect(end.code).to.equal('ERR_CHANNEL_CLOSED');
      for (let i = 0; i < 10; i++) {
        await send.send(i);
        expect(await into.receive()).to.equal(i);
      }
      // the server closing its receive channel ends the client's sends, and with both closed the stream goes
      into.close();
      await until(() => send.closed, 5000, 'the send handle to learn of the close');
      expect((await rejection(send.send(11))).code).to.equal('ERR_CHANNEL_CLOSED');
      await until(() => serverStreams(s) === 1, 5000, 'the pair stream to go');
    });

    it('releasing the receive handle alone gives its prefetched values back while the send handle goes on; releasing both frees the stream', async () => {
      const { s, out, into } = await pairServer(8);
      const first = pairOf(await s.client());
      for (let i = 0; i < 8; i++) await out.send(i);
      expect(await first.receive.receive()).to.equal(0);
      // the rest is prefetched by the first client
      await until(() => first.receive.length === 7, 5000, 'the prefetch');
      first.receive.release();
      const second = pairOf(await s.client());
      const got: number[] = [];
      for (let i = 0; i < 7; i++) got.push(await second.receive.receive());
      expect(got).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
      await first.send.send(42);
      expect(await into.receive()).to.equal(42);
      expect(serverStreams(s)).to.equal(4);
      first.send.release();
      await until(() => serverStreams(s) === 3, 5000, 'the first pair stream to go');
      expect((await rejection(first.send.send(1))).code).to.equal('ERR_CHANNEL_CLOSED');
    });

    it('a pair whose handles the program dropped is released once they are collected', async () => {
      v8.setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      const { s, out } = await pairServer();
      const session = await s.client();
      await (async () => {
        const { receive } = pairOf(session);
        await out.send(1);
        expect(await receive.receive()).to.equal(1);
      })();
      expect(serverStreams(s)).to.equal(2);
      for (let i = 0; i < 50 && serverStreams(s) > 1; i++) {
        gc();
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(serverStreams(s)).to.equal(1);
    });
  });
}

for (const transport of ['h2', 'ws'] as const) {
  describe(`listen/dial over ${transport}: one pair stream per client`, function () {
    this.timeout(30_000);
    afterEach(teardown);

    it('dial holds one pair stream; its send and receive work as before and close() frees it', async () => {
      const { key, cert, caCert } = await testCertificates();
      const l = await listen<number>('127.0.0.1:0', { key, cert, capacity: 16 });
      onTeardown(() => l.close());
      const d = await dial<number>(`127.0.0.1:${l.port}`, { ca: caCert, transport });
      onTeardown(() => d.close());
      void (async () => {
        for await (const v of d.receive) await d.send.send(v * 2);
      })().catch(() => undefined);
      const producer = (async () => {
        for (let i = 0; i < 100; i++) await l.send.send(i);
      })();
      const back: number[] = [];
      for (let i = 0; i < 100; i++) back.push(await l.receive.receive());
      await producer;
      expect(back).to.deep.equal(Array.from({ length: 100 }, (_, i) => i * 2));
      expect(l.server.stats().streams).to.equal(2);
      await d.close();
      await until(() => l.server.stats().streams === 0, 5000, 'the client\'s streams to go');
    });
  });
}

/** A raw HTTP/2 netchan session: its control stream, and streams opened by hand. */
class RawSession {
  private constructor(
    readonly conn: http2.ClientHttp2Session,
    readonly id: string,
  ) {}

  static async open(s: Started): Promise<RawSession> {
    const { caCert } = await testCertificates();
    const conn = http2.connect(`https://localhost:${s.port}`, { ca: caCert });
    conn.on('error', () => undefined);
    onTeardown(() => {
      conn.destroy();
    });
    const control = new RawStream(conn.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-kind': 'session' }));
    const h = await control.response;
    expect(Number(h[':status'])).to.equal(200);
    return new RawSession(conn, String(h['netchan-session']));
  }

  stream(sid: string, headers: Record<string, string>): RawStream {
    return new RawStream(
      this.conn.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-session': this.id, 'netchan-stream': sid, 'netchan-kind': 'channel', ...headers }),
    );
  }
}

describe('pair streams on the wire (docs/PROTOCOL.md §5.5, test/vectors/pair.json)', function () {
  this.timeout(30_000);
  afterEach(teardown);

  it('the worked exchange: a raw client and the server write exactly the frames of the vectors', async () => {
    const s = await startServer();
    const jobs = s.server.channel<string>('jobs', 2);
    const results = s.server.channel<string>('results', 1);
    const raw = await RawSession.open(s);
    const c1 = raw.stream('c1', { 'netchan-name': 'jobs', 'netchan-send-name': 'results' });
    const h = await c1.opened();
    expect([h['netchan-capacity'], h['netchan-send-capacity'], h['netchan-credit']]).to.deep.equal(['2', '1', '1']);
    await jobs.send('job-1');
    let expected = '';
    for (const step of steps) {
      if (step.from === 'client') {
        c1.sendBytes(Buffer.from(step.hex, 'hex'));
        continue;
      }
      if (step.step.includes('closes jobs')) jobs.close();
      expected += step.hex;
      await until(() => c1.body.toString('hex') === expected, 5000, `the server's bytes up to: ${step.step}`);
    }
    expect(await results.receive()).to.equal('done-1');
    expect(results.closed).to.equal(true);
    await until(() => c1.endedByPeer, 5000, 'the server to end its side once both channels are done');
    c1.stream.end();
    await c1.closed;
    await until(() => s.server.stats().streams === 1, 5000, 'the pair stream to go');
  });

  it('the vectors are the frames the text says, and the document shows every one', () => {
    const hex = (type: number, payload: Uint8Array) => Buffer.from(encodeFrame(type, payload)).toString('hex');
    const byName = new Map(steps.map((s) => [s.step, s.hex]));
    expect([...byName.values()]).to.include.members([
      hex(FrameType.ACK, u32(0)),
      hex(FrameType.CREDIT, u32(1)),
      hex(FrameType.VALUE, codec.encode('job-1')),
      hex(FrameType.ACK, u32(1)) + hex(FrameType.VALUE, codec.encode('done-1')),
      hex(FrameType.CLOSE_SEND, new Uint8Array(0)),
      hex(FrameType.CLOSE, new Uint8Array(0)),
    ]);
    expect(FrameType.CLOSE_SEND).to.equal(0x0b);
    expect(FrameType.RELEASE).to.equal(0x0c);
    const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');
    for (const s of steps) expect(doc, s.step).to.include(s.hex);
    expect(doc).to.include(hex(FrameType.RELEASE, new Uint8Array(0)));
  });

  it('bad pair headers are refused: no netchan-name, with netchan-ref or netchan-export, an unknown channel on either side', async () => {
    const s = await startServer();
    s.server.channel('jobs', 2);
    const raw = await RawSession.open(s);
    const cases: [Record<string, string>, number, string][] = [
      [{ 'netchan-send-name': 'jobs' }, 400, 'ERR_PROTOCOL'],
      [{ 'netchan-ref': 's1', 'netchan-send-name': 'jobs' }, 400, 'ERR_PROTOCOL'],
      [{ 'netchan-export': 'c3', 'netchan-capacity': '0', 'netchan-credit': '1', 'netchan-send-name': 'jobs' }, 400, 'ERR_PROTOCOL'],
      [{ 'netchan-name': 'jobs', 'netchan-send-name': 'nope' }, 404, 'ERR_UNKNOWN_CHANNEL'],
      [{ 'netchan-name': 'nope', 'netchan-send-name': 'jobs' }, 404, 'ERR_UNKNOWN_CHANNEL'],
    ];
    let n = 1;
    for (const [headers, status, code] of cases) {
      const sid = `c${n++}`;
      const st = raw.stream(sid, headers);
      const h = await st.response;
      expect([Number(h[':status']), h['netchan-error']], JSON.stringify(headers)).to.deep.equal([status, code]);
    }
    // and the session still opens a good one
    const good = raw.stream(`c${n}`, { 'netchan-name': 'jobs', 'netchan-send-name': 'jobs' });
    await good.opened();
  });

  it('a pair counts as one channel stream against maxChannelsPerSession', async () => {
    const s = await startServer({ maxChannelsPerSession: 2 });
    s.server.channel<number>('out', 1);
    s.server.channel<number>('in', 1);
    const session = await s.client();
    const a = pairOf(session);
    const b = pairOf(session);
    await Promise.all([opened(a.receive), opened(b.receive)]);
    const c = pairOf(session);
    expect((await rejection(c.send.send(1))).code).to.equal('ERR_LIMIT');
    expect((await rejection(c.receive.receive())).code).to.equal('ERR_LIMIT');
    await a.send.send(1);
  });
});

for (const transport of ['h2', 'ws'] as const) {
  describe(`hostile pair streams over ${transport}: ERR_PROTOCOL for the stream, the session's other streams unharmed`, function () {
    this.timeout(30_000);
    before(() => useTransport(transport));
    after(() => useTransport('h2'));
    afterEach(teardown);

    /** A pair and an ordinary channel handle on one session; `attack` breaks a rule on the pair's stream. */
    async function attacked(attack: (fs: FramedStream) => void, capacity = 4): Promise<{ s: Started; session: Session; receive: RemoteChannel<number>; send: RemoteChannel<number> }> {
      const { s, out, into } = await pairServer(capacity);
      s.server.channel<number>('other', 4);
      const session = await s.client();
      const { receive, send } = pairOf(session);
      await opened(receive);
      const pending = receive.receive();
      attack(pairStream(receive));
      const err = await rejection(pending);
      expect(err.code).to.equal('ERR_PROTOCOL');
      expect((await rejection(send.send(1))).code).to.equal('ERR_PROTOCOL');
      // the session's other streams carry on: an ordinary channel, and a new pair
      const other = session.channel<number>('other');
      await other.send(5);
      expect(await other.receive()).to.equal(5);
      const again = pairOf(session);
      await out.send(9);
      expect(await again.receive.receive()).to.equal(9);
      await again.send.send(10);
      // past what the offender got into the channel before it failed
      while ((await into.receive()) !== 10);
      return { s, session, receive, send };
    }

    it('CREDIT beyond the receive window', async () => {
      await attacked((fs) => fs.frame(FrameType.CREDIT, u32(0xffffffff)));
    });

    it('VALUE beyond the send credits of the send channel', async () => {
      await attacked((fs) => {
        for (let i = 0; i < 10; i++) fs.frame(FrameType.VALUE, codec.encode(i));
      }, 1);
    });

    it('ACK of values never sent on the receive channel', async () => {
      await attacked((fs) => fs.countFrame(FrameType.ACK, 3));
    });

    it('a second RELEASE, a CLOSE after RELEASE, a RELEASE with a payload', async () => {
      await attacked((fs) => {
        fs.frame(FrameType.RELEASE, new Uint8Array(0));
        fs.frame(FrameType.RELEASE, new Uint8Array(0));
      });
      await attacked((fs) => {
        fs.frame(FrameType.RELEASE, new Uint8Array(0));
        fs.frame(FrameType.CLOSE, new Uint8Array(0));
      });
      await attacked((fs) => fs.frame(FrameType.RELEASE, new Uint8Array([1])));
    });

    it('RELEASE from the owner fails the client\'s pair with ERR_PROTOCOL', async () => {
      const { s, out } = await pairServer();
      const session = await s.client();
      const { receive, send } = pairOf(session);
      await opened(receive);
      const pending = receive.receive();
      type Owner = { exporters: Map<string, { fs: FramedStream }> };
      const serverSession = [...(s.server as unknown as { sessions: Map<string, Owner> }).sessions.values()][0]!;
      const ownerPair = [...serverSession.exporters.values()][0]!;
      ownerPair.fs.frame(FrameType.RELEASE, new Uint8Array(0));
      expect((await rejection(pending)).code).to.equal('ERR_PROTOCOL');
      expect((await rejection(send.send(1))).code).to.equal('ERR_PROTOCOL');
      const again = pairOf(session);
      await out.send(3);
      expect(await again.receive.receive()).to.equal(3);
    });

    it('CLOSE_SEND on an ordinary channel stream is ERR_PROTOCOL, not a close', async () => {
      const { s, into } = await pairServer();
      const session = await s.client();
      const h = session.channel<number>('in');
      await h.send(1);
      const fs = (h as unknown as { endpoint: { fs: FramedStream } }).endpoint.fs;
      fs.frame(FrameType.CLOSE_SEND, new Uint8Array(0));
      await until(() => h.closed, 5000, 'the handle to fail');
      expect((await rejection(h.send(2))).code).to.equal('ERR_PROTOCOL');
      expect(into.closed).to.equal(false);
    });
  });
}
