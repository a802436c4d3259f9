/**
 * The WebSocket fallback's own rules (docs/PROTOCOL.md §7): the mux-frame codec against the
 * vectors, transport choice, hostile mux input, flow control, leaks; plus plaintext (`insecure`).
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import { WebSocket } from 'ws';
import { bytesHeader } from '../lib/wire/byte-frames.js';
import { Channel, connect, createServer, type NetchanServer } from '../lib/index.js';
import { MUX_INITIAL_WINDOW, MuxType, ResetCode, WS_SUBPROTOCOL, decodeMuxFrame, encodeHeaders, encodeMuxFrame } from '../lib/wire/mux-frames.js';
import { WsMux } from '../lib/transport/ws-mux.js';
import { rejection } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, type Started } from './helpers/net.js';

interface Vectors {
  frames: { name: string; hex: string; type: number; stream: number; headers?: Record<string, string>; payload?: string }[];
  errors: { name: string; hex: string }[];
}
const vectors = JSON.parse(readFileSync(new URL('./vectors/mux.json', import.meta.url), 'utf8')) as Vectors;

/** A raw WebSocket to the server's netchan endpoint, speaking the mux by hand. */
async function rawSocket(started: Started): Promise<{ ws: WebSocket; closed: Promise<number>; messages: Buffer[] }> {
  const certs = await testCertificates();
  const ws = new WebSocket(started.url.replace('https:', 'wss:'), WS_SUBPROTOCOL, { ca: certs.caCert, headers: { 'netchan-version': '1' } });
  onTeardown(() => ws.terminate());
  const messages: Buffer[] = [];
  ws.on('message', (m: Buffer) => messages.push(m));
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  return { ws, closed, messages };
}

/** A bystander session doing a round trip: proves nothing else was harmed. */
async function bystanderWorks(started: Started): Promise<void> {
  const echo = started.server.channel<number>('bystander', 4);
  const session = await started.client({ transport: 'ws' });
  await session.channel<number>('bystander').send(7);
  expect(await echo.receive()).to.equal(7);
}

describe('WebSocket fallback (docs/PROTOCOL.md §7)', function () {
  this.timeout(20_000);
  afterEach(teardown);

  describe('mux frames', () => {
    for (const v of vectors.frames) {
      it(`vector: ${v.name}`, () => {
        const payload = v.headers ? encodeHeaders(v.headers) : Buffer.from(v.payload ?? '', 'hex');
        expect(encodeMuxFrame(v.type, v.stream, payload).toString('hex')).to.equal(v.hex);
        const decoded = decodeMuxFrame(Buffer.from(v.hex, 'hex'));
        expect(decoded.type).to.equal(v.type);
        expect(decoded.stream).to.equal(v.stream);
        if (v.headers) expect({ ...decoded.headers }).to.deep.equal(v.headers);
        else expect(decoded.payload.toString('hex')).to.equal(v.payload);
      });
    }
    for (const v of vectors.errors) {
      it(`refuses: ${v.name}`, () => {
        expect(() => decodeMuxFrame(Buffer.from(v.hex, 'hex'))).to.throw().with.property('code', 'ERR_PROTOCOL');
      });
    }
    it('the document prints every vector', () => {
      const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');
      for (const v of [...vectors.frames, ...vectors.errors]) expect(doc).to.include(v.hex);
    });
  });

  describe('transport choice', () => {
    it('auto picks HTTP/2 where it gets through; ws forces the fallback', async () => {
      const started = await startServer();
      const auto = await started.client({ transport: 'auto' });
      expect(auto.transport).to.equal('h2');
      const ws = await started.client({ transport: 'ws' });
      expect(ws.transport).to.equal('ws');
    });

    it('auto falls back to a WebSocket when an HTTP/2 hop answers 426', async () => {
      // an HTTP/2 front that reaches netchan only over HTTP/1.1: it answers every HTTP/2 netchan
      // request with 426, and hands WebSocket upgrades to the netchan server
      const certs = await testCertificates();
      const server = createServer({});
      const jobs = server.channel<string>('jobs', 1);
      const front = http2.createSecureServer({ key: certs.key, cert: certs.cert, allowHTTP1: true, minVersion: 'TLSv1.3' });
      front.on('stream', (stream) => {
        stream.respond({ ':status': 426, 'netchan-error': 'ERR_PROTOCOL', 'netchan-message': 'HTTP/1.1 only beyond this hop' });
        stream.end();
      });
      front.on('upgrade', (req, socket, head) => server.handleUpgrade(req, socket, head));
      await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
      onTeardown(async () => {
        await server.close();
        front.close();
      });
      const { port } = front.address() as AddressInfo;
      const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert });
      onTeardown(() => session.close());
      expect(session.transport).to.equal('ws');
      await session.channel<string>('jobs').send('through');
      expect(await jobs.receive()).to.equal('through');
      // with transport: 'h2' there is no fallback: the 426 is the error
      const strict = await rejection(connect(`https://localhost:${port}/`, { ca: certs.caCert, transport: 'h2' }));
      expect(strict.code).to.equal('ERR_PROTOCOL');
      expect(strict.status).to.equal(426);
    });

    it('a bad transport name is ERR_INVALID_ARGUMENT', async () => {
      const started = await startServer();
      const err = await rejection(started.client({ transport: 'carrier-pigeon' as never }));
      expect(err.code).to.equal('ERR_INVALID_ARGUMENT');
    });

    it('a plain HTTP/1.1 netchan request to a standalone server gets 426 with Upgrade: websocket', async () => {
      const started = await startServer();
      const certs = await testCertificates();
      const res = await fetchH1(started.port, certs.caCert, { 'netchan-version': '1', 'netchan-kind': 'session' });
      expect(res.status).to.equal(426);
      expect(res.headers['netchan-error']).to.equal('ERR_PROTOCOL');
      expect(res.headers.upgrade).to.equal('websocket');
    });
  });

  describe('hostile mux input: the offending WebSocket goes, nothing else', () => {
    const cases: [string, (ws: WebSocket) => void][] = [
      ['a text message', (ws) => ws.send('hello')],
      ['a frame shorter than its header', (ws) => ws.send(Buffer.from('0100', 'hex'))],
      ['an unknown frame type', (ws) => ws.send(encodeMuxFrame(0x09, 1))],
      ['a frame for a stream never opened', (ws) => ws.send(encodeMuxFrame(MuxType.DATA, 77, Buffer.from('x')))],
      ['HEADERS that are not JSON', (ws) => ws.send(encodeMuxFrame(MuxType.HEADERS, 1, Buffer.from('{{')))],
      [
        'HEADERS opening streams out of order',
        (ws) => {
          const h = encodeHeaders({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-kind': 'session' });
          ws.send(encodeMuxFrame(MuxType.HEADERS, 5, h));
          ws.send(encodeMuxFrame(MuxType.HEADERS, 3, h));
        },
      ],
    ];
    for (const [name, attack] of cases) {
      it(`${name}: close 1002, bystander unharmed`, async () => {
        const started = await startServer();
        const { ws, closed } = await rawSocket(started);
        attack(ws);
        expect(await closed).to.equal(1002);
        await bystanderWorks(started);
        await until(() => started.server.stats().streams === 2 /* the bystander's control and channel */, 3000, 'attacker streams gone');
      });
    }

    it('a message above the size limit: close 1009, bystander unharmed', async () => {
      const started = await startServer();
      const { ws, closed } = await rawSocket(started);
      ws.send(Buffer.alloc(200 * 1024));
      expect(await closed).to.equal(1009);
      await bystanderWorks(started);
    });

    it('DATA beyond the window resets that stream only (FLOW_CONTROL_ERROR); the session lives on', async () => {
      const started = await startServer();
      const { ws, messages } = await rawSocket(started);
      const base = { ':method': 'POST', ':path': '/', 'netchan-version': '1' };
      ws.send(encodeMuxFrame(MuxType.HEADERS, 1, encodeHeaders({ ...base, 'netchan-kind': 'session' })));
      await until(() => messages.length >= 1, 3000, 'session answer');
      const session = JSON.parse(decodeMuxFrame(messages[0]!).payload.toString()) as Record<string, string>;
      expect(session[':status']).to.equal('200');
      // an exported byte stream no value names yet: the server holds its bytes unread
      ws.send(encodeMuxFrame(MuxType.HEADERS, 3, encodeHeaders({ ...base, 'netchan-kind': 'bytes', 'netchan-session': session['netchan-session']!, 'netchan-stream': 'c1', 'netchan-export': 'c1', 'netchan-mode': 'r' })));
      // its data as a byte stream carries it (§6.2): one BYTES frame, filling the window exactly
      const first = Buffer.concat([bytesHeader(2 * MUX_INITIAL_WINDOW), Buffer.alloc(64 * 1024 - 5, 1)]);
      ws.send(encodeMuxFrame(MuxType.DATA, 3, first));
      for (let sent = first.length; sent < MUX_INITIAL_WINDOW; sent += 64 * 1024) ws.send(encodeMuxFrame(MuxType.DATA, 3, Buffer.alloc(64 * 1024, 1)));
      ws.send(encodeMuxFrame(MuxType.DATA, 3, Buffer.from('one byte too many')));
      await until(() => messages.some((m) => m[0] === MuxType.RESET && m.readUInt32BE(1) === 3), 3000, 'RESET of stream 3');
      const reset = messages.find((m) => m[0] === MuxType.RESET && m.readUInt32BE(1) === 3)!;
      expect(reset.readUInt32BE(5)).to.equal(ResetCode.FLOW_CONTROL_ERROR);
      expect(messages.some((m) => m[0] === MuxType.WINDOW && m.readUInt32BE(1) === 3)).to.equal(false);
      // the WebSocket and the session on it are still there
      expect(ws.readyState).to.equal(WebSocket.OPEN);
      expect(started.server.stats().sessions).to.equal(1);
      await bystanderWorks(started);
    });
  });

  describe('flow control and leaks', () => {
    it('many byte streams read late and in reverse order: no stream waits for another (40 x 1 MiB)', async () => {
      const started = await startServer();
      const { Readable } = await import('node:stream');
      const { createHash, randomBytes } = await import('node:crypto');
      const uploads = started.server.channel<NodeJS.ReadableStream>('uploads', 64);
      const session = await started.client({ transport: 'ws' });
      const handle = session.channel<NodeJS.ReadableStream>('uploads');
      const digests: string[] = [];
      for (let k = 0; k < 40; k++) {
        const data = randomBytes(1024 * 1024);
        digests.push(createHash('sha256').update(data).digest('hex'));
        await handle.send(Readable.from([data]));
      }
      const streams: NodeJS.ReadableStream[] = [];
      for (let k = 0; k < 40; k++) streams.push(await uploads.receive());
      // the last one first: only its own window stands between it and its reader
      for (let k = 39; k >= 0; k--) {
        const h = createHash('sha256');
        for await (const c of streams[k] as AsyncIterable<Buffer>) h.update(c);
        expect(h.digest('hex'), `upload ${k}`).to.equal(digests[k]);
      }
    });

    it('a byte stream larger than the window flows with WINDOW grants (8 MiB, both ways)', async () => {
      const started = await startServer();
      const { Readable } = await import('node:stream');
      const { createHash, randomBytes } = await import('node:crypto');
      const data = randomBytes(8 * 1024 * 1024);
      const digest = createHash('sha256').update(data).digest('hex');
      const uploads = started.server.channel<NodeJS.ReadableStream>('uploads', 1);
      const session = await started.client({ transport: 'ws' });
      await session.channel<NodeJS.ReadableStream>('uploads').send(Readable.from([data.subarray(0, 4 << 20), data.subarray(4 << 20)]));
      const received = await uploads.receive();
      const h = createHash('sha256');
      for await (const c of received as AsyncIterable<Buffer>) h.update(c);
      expect(h.digest('hex')).to.equal(digest);
    });

    it('400 channels opened and closed over one WebSocket leave no mux stream, session or socket behind', async () => {
      const started = await startServer();
      const muxes = (started.server as unknown as { webSockets: { muxes: Set<WsMux> } }).webSockets.muxes;
      const jobs = started.server.channel<number>('jobs', 8);
      const session = await started.client({ transport: 'ws' });
      const clientMux = (session as unknown as { wire: WsMux }).wire;
      for (let i = 0; i < 400; i++) {
        const h = session.channel<number>('jobs');
        await h.send(i);
        expect(await jobs.receive()).to.equal(i);
        h.release();
      }
      await until(() => clientMux.streamCount === 1 && [...muxes][0]!.streamCount === 1, 3000, 'only the control streams left');
      expect(started.server.stats()).to.include({ sessions: 1, channels: 0, streams: 1 });
      await session.close();
      await until(() => muxes.size === 0 && started.server.stats().streams === 0 && started.server.stats().sessions === 0, 3000, 'mux gone');
      expect(clientMux.destroyed).to.equal(true);
    });
  });
});

describe('plaintext (insecure: true)', function () {
  this.timeout(20_000);
  afterEach(teardown);

  async function startPlain(path?: string): Promise<{ server: NetchanServer; url: string; socketPath?: string }> {
    const server = createServer({ insecure: true });
    onTeardown(() => server.close());
    if (path) {
      await server.listen(path);
      return { server, url: 'http://localhost/', socketPath: path };
    }
    const { port } = await server.listen(0, '127.0.0.1');
    return { server, url: `http://127.0.0.1:${port}/` };
  }

  it('an http: URL is refused without insecure: true, and a server without certificates needs it', async () => {
    const err = await rejection(connect('http://127.0.0.1:1/'));
    expect(err.code).to.equal('ERR_INVALID_ARGUMENT');
    expect(err.message).to.match(/insecure/);
    expect(() => createServer({}).listen(0)).to.throw().with.property('code', 'ERR_INVALID_ARGUMENT');
  });

  for (const transport of ['h2', 'ws'] as const) {
    it(`h2c and ws:// on loopback carry values and reply channels (${transport})`, async () => {
      const { server, url } = await startPlain();
      const squares = server.channel<{ n: number; reply: Channel<number> }>('square', 4);
      void (async () => {
        for await (const { n, reply } of squares) await reply.send(n * n);
      })();
      const session = await connect(url, { insecure: true, transport });
      onTeardown(() => session.close());
      expect(session.transport).to.equal(transport);
      const reply = new Channel<number>();
      await session.channel<{ n: number; reply: typeof reply }>('square').send({ n: 9, reply });
      expect(await reply.receive()).to.equal(81);
    });
  }

  it('works on a unix socket', async () => {
    const path = join(tmpdir(), `netchan-test-${process.pid}-${Date.now()}.sock`);
    const { server, url, socketPath } = await startPlain(path);
    const jobs = server.channel<string>('jobs', 1);
    const session = await connect(url, { insecure: true, socketPath });
    onTeardown(() => session.close());
    await session.channel<string>('jobs').send('over a unix socket');
    expect(await jobs.receive()).to.equal('over a unix socket');
  });
});

/** An HTTP/1.1 POST over TLS (no ALPN), returning status and headers. */
async function fetchH1(port: number, ca: string, headers: Record<string, string>): Promise<{ status: number; headers: Record<string, string | string[] | undefined> }> {
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, servername: 'localhost', ca, method: 'POST', path: '/', headers }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
    });
    req.on('error', reject);
    req.end();
  });
}

