/**
 * Hardening: attacks found in an attacker's review of the hardened server. A raw `node:http2`
 * client speaks the wire protocol (docs/PROTOCOL.md) by hand against a real TLS server.
 */
import http2 from 'node:http2';
import { Readable } from 'node:stream';
import v8 from 'node:v8';
import { runInNewContext } from 'node:vm';
import { expect } from 'chai';
import { Channel, createGateway } from '../lib/index.js';
import { Codec, type ReferenceHooks } from '../lib/wire/codec.js';
import { FrameType } from '../lib/wire/frames.js';
import { bytesHeader } from '../lib/wire/byte-frames.js';
import { REPLAY_SOFT_BYTES, TURN_BYTES } from '../lib/session/framed-stream.js';
import { rejection } from './helpers/assert.js';
import { RawStream } from './helpers/raw-stream.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, type Started } from './helpers/net.js';

const codec = new Codec();
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};


class RawSession {
  private constructor(
    readonly conn: http2.ClientHttp2Session,
    readonly id: string,
    readonly control: RawStream,
  ) {}

  static async open(s: Started, headers: Record<string, string> = {}): Promise<RawSession> {
    const conn = await rawConnection(s);
    const control = new RawStream(conn.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-kind': 'session', ...headers }));
    const h = await control.response;
    expect(Number(h[':status'])).to.equal(200);
    return new RawSession(conn, String(h['netchan-session']), control);
  }

  stream(sid: string, headers: Record<string, string>): RawStream {
    return new RawStream(
      this.conn.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-session': this.id, 'netchan-stream': sid, ...headers }),
    );
  }
}

async function rawConnection(s: Started): Promise<http2.ClientHttp2Session> {
  const { caCert } = await testCertificates();
  const conn = http2.connect(`https://localhost:${s.port}`, { ca: caCert });
  conn.on('error', () => undefined);
  onTeardown(() => {
    conn.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    conn.once('connect', () => resolve());
    conn.once('error', reject);
  });
  return conn;
}

/** A stand-in that the codec turns into the reference given. */
class Ref {
  constructor(readonly data: Record<string, unknown>) {}
}

/** Encodes `value` with each Ref in it written as the reference it holds. */
function encodeWithRefs(value: Record<string, unknown>): Uint8Array {
  const swap = (v: unknown): unknown =>
    v instanceof Ref ? Object.assign('m' in v.data ? new Readable({ read() {} }) : new Channel(), { ref: v }) : v;
  const hooks: ReferenceHooks = { encodeReference: (_kind, obj) => (obj as { ref: Ref }).ref.data, decodeReference: () => undefined };
  return codec.encode(Object.fromEntries(Object.entries(value).map(([k, v]) => [k, swap(v)])), hooks);
}

/** Bytes in ArrayBuffers once garbage is collected and the freed backing stores are gone. */
async function settled(gc: () => void): Promise<number> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
  return process.memoryUsage().arrayBuffers;
}

describe('hardening: attacks', function () {
  this.timeout(30_000);
  afterEach(teardown);

  // the tests that measure memory come first, before other tests leave garbage to collect
  it('a byte-stream export reset before a value named it lets go of what it buffered at once, not at the reference timeout', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    // a limit of 4 open byte streams: the reset ones do not count, so only their buffers could add up
    const s = await startServer({ referenceTimeoutMs: 20_000, maxByteStreamsPerSession: 4 });
    const raw = await RawSession.open(s);
    const measure = async (): Promise<number> => {
      const before = raw.control.frames().filter((f) => f.type === FrameType.PONG).length;
      raw.control.send(FrameType.PING, Buffer.alloc(8, 1));
      await until(() => raw.control.frames().filter((f) => f.type === FrameType.PONG).length > before, 5000, 'a PONG');
      return settled(gc);
    };
    const base = await measure();
    const rounds = 48;
    const size = 512 * 1024;
    for (let i = 0; i < rounds; i++) {
      const exp = raw.stream(`b${i}`, { 'netchan-kind': 'bytes', 'netchan-export': `b${i}`, 'netchan-mode': 'd' });
      expect(await exp.status(), `export ${i}`).to.equal(200);
      await new Promise<void>((resolve) => exp.stream.write(Buffer.concat([bytesHeader(size), Buffer.alloc(size, i)]), () => resolve()));
      // the server has the bytes: a round trip on the control stream behind them
      await measure();
      exp.stream.close(http2.constants.NGHTTP2_CANCEL);
      await exp.closed;
    }
    const held = (await measure()) - base;
    expect(held, 'bytes still held for the exports reset').to.be.below((rounds * size) / 2);
  });

  it('the values waiting behind a value for its references go when their stream is reset, not at the reference timeout', async () => {
    v8.setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const s = await startServer({ referenceTimeoutMs: 20_000 });
    s.server.channel<unknown>('buffered', 16);
    const raw = await RawSession.open(s);
    let pings = 0;
    const roundTrip = async (): Promise<void> => {
      const before = raw.control.frames().filter((f) => f.type === FrameType.PONG).length;
      raw.control.send(FrameType.PING, Buffer.alloc(8, ++pings));
      await until(() => raw.control.frames().filter((f) => f.type === FrameType.PONG).length > before, 5000, 'a PONG');
    };
    const measure = async (): Promise<number> => {
      await roundTrip();
      return settled(gc);
    };
    const base = await measure();
    const rounds = 8;
    const size = 256 * 1024;
    for (let i = 0; i < rounds; i++) {
      const named = raw.stream(`n${i}`, { 'netchan-kind': 'channel', 'netchan-name': 'buffered' });
      expect(await named.status()).to.equal(200);
      // a value waiting for an export that never comes, and 15 values (all the credits) behind it
      named.send(FrameType.VALUE, encodeWithRefs({ i, reply: new Ref({ o: 'c', id: 'never' }) }));
      for (let k = 0; k < 15; k++) named.send(FrameType.VALUE, codec.encode(new Uint8Array(size).fill(k)));
      await new Promise<void>((resolve) => named.stream.write(Buffer.alloc(0), () => resolve()));
      named.stream.close(http2.constants.NGHTTP2_CANCEL);
      await named.closed;
    }
    // the server handled the resets (a round trip on the same connection comes after them)
    const held = (await measure()) - base;
    expect(held, 'bytes still held for the streams reset').to.be.below((rounds * 15 * size) / 2);
  });

  it('a value waiting for its references on a stream that was reset is dropped, not delivered into the channel later', async () => {
    const s = await startServer();
    const jobs = s.server.channel<unknown>('jobs', 0);
    const raw = await RawSession.open(s);
    const rounds = 20;
    for (let i = 0; i < rounds; i++) {
      const named = raw.stream(`n${i}`, { 'netchan-kind': 'channel', 'netchan-name': 'jobs' });
      expect(await named.status()).to.equal(200);
      // the value names an export that has not arrived: it waits; then the sender resets the stream
      named.send(FrameType.VALUE, encodeWithRefs({ i, reply: new Ref({ o: 'c', id: `e${i}` }) }));
      named.stream.close(http2.constants.NGHTTP2_CANCEL);
      await named.closed;
      // the export arrives after the reset (same connection: after it, in order)
      const exp = raw.stream(`e${i}`, { 'netchan-kind': 'channel', 'netchan-export': `e${i}`, 'netchan-capacity': '0', 'netchan-credit': '1' });
      expect(await exp.status()).to.equal(200);
    }
    // every sender is gone: none of their unacknowledged values may be in the channel (§5.3)
    let delivered = 0;
    while (jobs.tryReceive().ok) delivered++;
    expect(delivered, 'values of reset streams parked in the channel').to.equal(0);
  });

  it('a resumable session whose client never confirms (no RCVD) holds a bounded replay log: the server stops sending until it confirms', async () => {
    const s = await startServer();
    const feed = s.server.channel<Uint8Array>('feed', 64);
    const total = 1000;
    const size = 16 * 1024;
    let produced = 0;
    void (async () => {
      for (; produced < total; produced++) await feed.send(new Uint8Array(size).fill(produced % 256));
    })().catch(() => undefined);
    const raw = await RawSession.open(s, { 'netchan-resumable': '1' });
    expect((await raw.control.response)['netchan-lease-ms']).to.not.equal(undefined);
    const named = raw.stream('c1', { 'netchan-kind': 'channel', 'netchan-name': 'feed' });
    expect(await named.status()).to.equal(200);
    // demand for every value at once (within the receive window, §5.2), and never a receipt
    named.send(FrameType.CREDIT, u32(total));
    const values = () => named.frames().filter((f) => f.type === FrameType.VALUE);
    /** One round trip on the control stream: the server handled everything sent before it. */
    let pings = 0;
    const roundTrip = async (): Promise<void> => {
      const before = raw.control.frames().filter((f) => f.type === FrameType.PONG).length;
      raw.control.send(FrameType.PING, Buffer.alloc(8, ++pings));
      await until(() => raw.control.frames().filter((f) => f.type === FrameType.PONG).length > before, 5000, 'a PONG');
    };
    // until the server stops sending (the same count over three round trips) or sent them all
    let last = -1;
    let same = 0;
    for (let i = 0; i < 500 && same < 3 && values().length < total; i++) {
      await roundTrip();
      const n = values().length;
      same = n === last ? same + 1 : 0;
      last = n;
    }
    const held = values().reduce((sum, f) => sum + f.payload.length + 5, 0);
    expect(held, 'bytes the server sent and keeps for replay without a receipt').to.be.at.most(REPLAY_SOFT_BYTES + TURN_BYTES + size + 64);
    expect(values().length).to.be.below(total);
    // a receipt for everything lets the rest come
    const got = named.frames().filter((f) => f.type !== FrameType.RCVD).length;
    named.send(FrameType.RCVD, u32(got));
    let confirmed = got;
    await until(
      () => {
        const now = named.frames().filter((f) => f.type !== FrameType.RCVD).length;
        if (now > confirmed) {
          named.send(FrameType.RCVD, u32(now - confirmed));
          confirmed = now;
        }
        return values().length === total;
      },
      20_000,
      'every value after the receipts',
    );
  });

  it('gateway: a NAT64 address leading to cloud metadata or loopback is refused however it is spelled (§8.1)', async () => {
    const s = await startServer();
    createGateway(s.server, { allow: ['*:80', () => true], connectTimeoutMs: 2000 });
    const session = await s.client();
    for (const target of ['[64:ff9b:0::a9fe:a9fe]:80', '[0064:ff9b::169.254.169.254]:80', '[64:ff9b:0:0:0:0:7f00:1]:80', '[0:0::ffff:a9fe:a9fe]:80']) {
      const err = await rejection(session.dialTcp(target));
      expect(err.code, target).to.equal('ERR_FORBIDDEN_TARGET');
      expect(err.message, target).to.match(/(cloud metadata|loopback) address/);
    }
  });

});

describe('hardening: refused streams a client never ends', function () {
  this.timeout(30_000);
  afterEach(teardown);

  for (const kind of ['h2', 'ws'] as const) {
    it(`regression: refused streams the client never ends are let go by the server once answered, not kept open for the connection's life (${kind})`, async () => {
      const s = await startServer();
      const { caCert } = await testCertificates();
      const { openTransport } = await import('../lib/transport/connect.js');
      const transport = await openTransport(new URL(s.url), kind, { ca: caCert });
      onTeardown(() => transport.destroy());
      const n = 500;
      let answered = 0;
      let closed = 0;
      for (let i = 0; i < n; i++) {
        // a session that does not exist: 404 ERR_UNKNOWN_SESSION, and the request side stays open
        const wire = transport.open({ 'netchan-version': '1', 'netchan-session': '0'.repeat(32), 'netchan-stream': `x${i}`, 'netchan-kind': 'channel', 'netchan-name': 'x' });
        const stream = wire.bytes;
        stream.on('error', () => undefined);
        stream.on('data', () => undefined);
        wire.onResponse(({ status }) => {
          if (status === 404) answered++;
        });
        stream.once('close', () => closed++);
      }
      await until(() => answered === n, 10_000, 'every refusal');
      await until(() => closed === n, 10_000, 'the server to let go of every refused stream');
      expect(closed).to.equal(n);
      // the connection and the server are fine: an honest client is served
      const ch = s.server.channel<number>('ok', 1);
      const session = await s.client({ transport: kind });
      await session.channel<number>('ok').send(7);
      expect(await ch.receive()).to.equal(7);
    });
  }
});
