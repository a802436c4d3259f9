/**
 * netchan behind real reverse proxies: nginx (HTTP/2 end to end with grpc_pass, and
 * HTTP/1.1 only with a WebSocket upgrade), HAProxy (HTTP/2 to the backend) and Caddy, each a
 * real process started from the templates in test/fixtures/proxies/, in front
 * of a standalone netchan server with TLS. The same channel scenarios run through each, and the
 * reference scenarios (values carrying several channels and byte streams, whose streams a proxy
 * may deliver before or after the value) also with netchan mounted on an Express app behind
 * nginx; a session resumes across an nginx restart; and the configurations docs/proxies.md shows
 * are checked against the templates, so the docs cannot drift from what is tested.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { Duplex, PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import { Channel, connect, createGateway, createServer, type ChannelLike, type ConnectOptions, type NetchanServer, type Session } from '../lib/index.js';
import { attach, netchan } from '../middleware/express.js';
import { rejection } from './helpers/assert.js';
import { digestOf, httpGet, readAll } from './helpers/streams.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, teardown, until } from './helpers/net.js';
import { docValues, renderTemplate, startProxy, templateText, type RunningProxy, type TemplateName } from './helpers/proxies.js';

const TOKEN = 'proxy-test-token';
const STREAM_BYTES = 8 * 1024 * 1024;

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

/** A standalone netchan server with TLS that wants a bearer token and records what reached it. */
interface Backend {
  server: NetchanServer;
  port: number;
  /** Headers of every stream and upgrade the server authenticated, newest last. */
  seen: Record<string, unknown>[];
}

async function startBackend(plaintext = false): Promise<Backend> {
  const certs = await testCertificates();
  const seen: Record<string, unknown>[] = [];
  const server = createServer({
    // behind a TLS-terminating proxy the backend may speak plaintext (h2c and ws:) on loopback
    ...(plaintext ? { insecure: true } : { key: certs.key, cert: certs.cert }),
    authenticate: ({ headers }) => {
      seen.push({ ...headers });
      return headers.authorization === `Bearer ${TOKEN}` ? 'token:proxy-test' : false;
    },
  });
  const { port } = await server.listen(0, '127.0.0.1');
  return { server, port, seen };
}

/** The same server mounted at /netchan on an Express 5 app (HTTP/2 with TLS), behind the app's own token check. */
async function startExpressBackend(): Promise<Backend & { close(): Promise<void> }> {
  const certs = await testCertificates();
  const seen: Record<string, unknown>[] = [];
  const server = createServer();
  const app = express();
  const requireToken = (req: Request, res: Response, next: NextFunction): void => {
    seen.push({ ...req.headers });
    if (req.get('authorization') !== `Bearer ${TOKEN}`) {
      res.status(401).type('text/plain').send('who are you?');
      return;
    }
    res.locals.principal = 'token:proxy-test';
    next();
  };
  app.use('/netchan', requireToken, netchan(server));
  const httpServer = http2.createSecureServer({ key: certs.key, cert: certs.cert, allowHTTP1: true, minVersion: 'TLSv1.3' }, app as never);
  attach(httpServer, app);
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = httpServer.address() as AddressInfo;
  return {
    server,
    port,
    seen,
    async close() {
      await server.close();
      await new Promise<void>((resolve) => httpServer.close(() => resolve()));
    },
  };
}

type Job = { n: number; reply: ChannelLike<number>; data: Readable };

/**
 * The reference scenarios of the hardening issue, through whatever `client()` goes through: values
 * carrying several channels and byte streams at once, both ways, and many request/replies on one
 * session with a fresh reply channel and byte stream each. Each stream of such a value may reach
 * the server on an upstream connection of its own, before or after the value (docs/PROTOCOL.md §4.2).
 */
function referenceScenarios(server: () => NetchanServer, client: () => Promise<Session>, prefix: string): void {
  it('regression: a value with a reply channel and a byte stream gets through (client → server references)', async () => {
    const jobs = server().channel<Job>(`${prefix}-one-job`, 1);
    const session = await client();
    const reply = new Channel<number>();
    await session.channel<Job>(`${prefix}-one-job`).send({ n: 3, reply, data: Readable.from([Buffer.from('three')]) });
    const job = await jobs.receive();
    expect((await readAll(job.data)).toString()).to.equal('three');
    const sent = job.reply.send(job.n * 2);
    expect(await reply.receive()).to.equal(6);
    await sent;
  });

  it('regression: a value carrying 4 channels and 3 byte streams (Readables and a Writable) at once, client → server', async () => {
    type Bundle = { replies: ChannelLike<string>[]; uploads: Readable[]; sink: Writable };
    const bundles = server().channel<Bundle>(`${prefix}-bundle-up`, 1);
    const session = await client();
    const replies = Array.from({ length: 4 }, () => new Channel<string>(1));
    const parts = ['alpha', 'beta', randomBytes(256 * 1024).toString('hex')];
    const received: Buffer[] = [];
    const sinkDone = new Promise<void>((resolve) => {
      const sink = new Writable({
        write(chunk: Buffer, _e, cb) {
          received.push(chunk);
          cb();
        },
        final(cb) {
          resolve();
          cb();
        },
      });
      void session.channel<Bundle>(`${prefix}-bundle-up`).send({ replies, uploads: parts.map((p) => Readable.from([Buffer.from(p)])), sink });
    });
    const bundle = await bundles.receive();
    expect(bundle.replies).to.have.length(4);
    const texts = await Promise.all(bundle.uploads.map(async (u) => (await readAll(u)).toString()));
    expect(texts).to.deep.equal(parts);
    await Promise.all(bundle.replies.map((r, i) => r.send(`reply ${i}`)));
    bundle.sink.end('written by the server');
    for (let i = 0; i < 4; i++) expect(await replies[i]!.receive()).to.equal(`reply ${i}`);
    await sinkDone;
    expect(Buffer.concat(received).toString()).to.equal('written by the server');
  });

  it('regression: a value carrying 4 channels and 3 byte streams at once, server → client', async () => {
    type Bundle = { chans: ChannelLike<string>[]; downloads: Readable[]; sink: Writable };
    const out = server().channel<Bundle>(`${prefix}-bundle-down`, 1);
    const chans = Array.from({ length: 4 }, () => new Channel<string>(1));
    const parts = ['one', 'two', randomBytes(256 * 1024).toString('hex')];
    const received: Buffer[] = [];
    const sinkDone = new Promise<void>((resolve) => {
      const sink = new Writable({
        write(chunk: Buffer, _e, cb) {
          received.push(chunk);
          cb();
        },
        final(cb) {
          resolve();
          cb();
        },
      });
      void out.send({ chans, downloads: parts.map((p) => Readable.from([Buffer.from(p)])), sink });
    });
    const session = await client();
    const bundle = await session.channel<Bundle>(`${prefix}-bundle-down`).receive();
    const texts = await Promise.all(bundle.downloads.map(async (d) => (await readAll(d)).toString()));
    expect(texts).to.deep.equal(parts);
    await Promise.all(bundle.chans.map((c, i) => c.send(`from the client ${i}`)));
    for (let i = 0; i < 4; i++) expect(await chans[i]!.receive()).to.equal(`from the client ${i}`);
    bundle.sink.end('written by the client');
    await sinkDone;
    expect(Buffer.concat(received).toString()).to.equal('written by the client');
  });

  it('regression: 500 request/replies on one session, each value with a fresh reply channel and a byte stream', async () => {
    const N = 500;
    const jobs = server().channel<Job>(`${prefix}-many-jobs`, 8);
    const serving = (async () => {
      for (let i = 0; i < N; i++) {
        const { n, reply, data } = await jobs.receive();
        const text = (await readAll(data)).toString();
        await reply.send(text === `data ${n}` ? n + 1 : -1);
        // a reply channel nobody closes keeps its stream (HAProxy allows 100 at once, Caddy 250)
        reply.close();
      }
    })();
    const session = await client();
    const remote = session.channel<Job>(`${prefix}-many-jobs`);
    for (let n = 0; n < N; n++) {
      const reply = new Channel<number>();
      await remote.send({ n, reply, data: Readable.from([Buffer.from(`data ${n}`)]) });
      const got = await reply.receive();
      if (got !== n + 1) expect.fail(`request ${n} got ${got}`);
      await until(() => reply.closed, 5000, 'the reply channel to close');
    }
    await serving;
    // and the server is fine: another honest session carries on
    const other = await client();
    const hello = server().channel<string>(`${prefix}-after`, 1);
    await other.channel<string>(`${prefix}-after`).send('still here');
    expect(await hello.receive()).to.equal('still here');
    await until(() => server().stats().pendingReferences === 0, 5000, 'no pending reference left');
  });
}

async function proxyFor(template: TemplateName, backendPort: number, port?: number): Promise<RunningProxy> {
  const certs = await testCertificates();
  return startProxy({
    template,
    backend: `127.0.0.1:${backendPort}`,
    tls: { cert: certs.cert, key: certs.key, ca: certs.caCert, name: 'localhost' },
    ...(port !== undefined ? { port } : {}),
  });
}

async function clientVia(proxy: RunningProxy, options: ConnectOptions = {}): Promise<Session> {
  const { caCert } = await testCertificates();
  const session = await connect(`https://localhost:${proxy.port}/`, { ca: caCert, token: TOKEN, connectTimeoutMs: 5000, ...options });
  onTeardown(() => session.close());
  return session;
}

interface Route {
  title: string;
  template: TemplateName;
  /** What the client asks for (default `auto`). */
  transport?: ConnectOptions['transport'];
  /** The transport the session must end up on. */
  expect: 'h2' | 'ws';
  /** The backend runs without TLS (`insecure: true`), the proxy talks h2c to it. */
  plaintext?: boolean;
}

const routes: Route[] = [
  { title: 'nginx, HTTP/2 end to end (grpc_pass)', template: 'nginx-h2.conf', expect: 'h2' },
  { title: 'HAProxy, HTTP/2 to the backend', template: 'haproxy.cfg', expect: 'h2' },
  { title: 'nginx, TLS in front of a plaintext (h2c) backend', template: 'nginx-h2c.conf', expect: 'h2', plaintext: true },
  { title: 'nginx, HTTP/1.1 only (proxy_pass with WebSocket upgrade)', template: 'nginx-ws.conf', expect: 'ws' },
  { title: 'HAProxy, the WebSocket fallback (transport: ws)', template: 'haproxy.cfg', transport: 'ws', expect: 'ws' },
  { title: 'Caddy, HTTP/2 to the backend (reverse_proxy)', template: 'Caddyfile', expect: 'h2' },
  { title: 'Caddy, the WebSocket fallback (transport: ws)', template: 'Caddyfile', transport: 'ws', expect: 'ws' },
];

for (const route of routes) {
  describe(`behind ${route.title}`, function () {
    this.timeout(60_000);
    let backend: Backend;
    let proxy: RunningProxy;
    const client = (options: ConnectOptions = {}) => clientVia(proxy, { ...(route.transport ? { transport: route.transport } : {}), ...options });

    before(async () => {
      backend = await startBackend(route.plaintext);
      proxy = await proxyFor(route.template, backend.port);
    });
    after(async () => {
      await proxy?.stop();
      await backend?.server.close();
    });
    afterEach(teardown);

    it(`the session runs over ${route.expect}; the token and the client address reach the server`, async () => {
      backend.seen.length = 0;
      const session = await client();
      expect(session.transport).to.equal(route.expect);
      const inbox = backend.server.channel<string>('hello', 1);
      await session.channel<string>('hello').send('hi');
      expect(await inbox.receive()).to.equal('hi');
      expect(backend.seen.length).to.be.greaterThan(0);
      for (const h of backend.seen) {
        expect(h.authorization).to.equal(`Bearer ${TOKEN}`);
        expect(String(h['x-forwarded-for'])).to.match(/(^|, ?)127\.0\.0\.1$/);
      }
      if (route.expect === 'h2') expect(backend.seen.map((h) => h['netchan-kind'])).to.include.members(['session', 'channel']);
      else expect(backend.seen[0]!.upgrade).to.match(/websocket/i);
    });

    it('a client without the token is refused with ERR_UNAUTHORIZED', async () => {
      const { caCert } = await testCertificates();
      const err = await rejection(connect(`https://localhost:${proxy.port}/`, { ca: caCert, transport: route.transport ?? 'auto', connectTimeoutMs: 5000 }));
      expect(err.code).to.equal('ERR_UNAUTHORIZED');
    });

    it('values keep their types both ways (Date, BigInt, Buffer, Map, Set, nested)', async () => {
      const up = backend.server.channel<unknown>('types-up', 8);
      const down = backend.server.channel<unknown>('types-down', 8);
      const session = await client();
      const value = {
        when: new Date('2024-02-29T12:34:56.789Z'),
        big: -(2n ** 70n) + 1n,
        bytes: Buffer.from('00ff10ab', 'hex'),
        map: new Map<unknown, unknown>([[1, 'one'], ['list', [1, 2, 3]]]),
        set: new Set(['a', 'b']),
        nested: { deep: [{ n: 1.5, s: 'ünïcödé', nil: null }] },
      };
      await session.channel<unknown>('types-up').send(value);
      expect(await up.receive()).to.deep.equal(value);
      await down.send(value);
      expect(await session.channel<unknown>('types-down').receive()).to.deep.equal(value);
    });

    it('request/reply: 20 requests, each with its own reply channel inside the value', async () => {
      const requests = backend.server.channel<{ n: number; reply: ChannelLike<number> }>('square', 4);
      const serving = (async () => {
        for (let i = 0; i < 20; i++) {
          const { n, reply } = await requests.receive();
          await reply.send(n * n);
          reply.close();
        }
      })();
      const session = await client();
      const remote = session.channel<{ n: number; reply: ChannelLike<number> }>('square');
      for (let n = 0; n < 20; n++) {
        const reply = new Channel<number>();
        await remote.send({ n, reply });
        expect(await reply.receive()).to.equal(n * n);
        await until(() => reply.closed, 5000, 'the reply channel to close');
      }
      await serving;
    });

    it('an 8 MiB byte stream client → server arrives with its SHA-256 digest', async () => {
      const uploads = backend.server.channel<{ name: string; data: Readable }>('uploads', 1);
      const session = await client();
      const { stream, digest } = randomSource(STREAM_BYTES);
      await session.channel<{ name: string; data: Readable }>('uploads').send({ name: 'blob', data: stream });
      const { name, data } = await uploads.receive();
      expect(name).to.equal('blob');
      const got = await digestOf(data);
      expect(got.bytes).to.equal(STREAM_BYTES);
      expect(got.hex).to.equal(digest());
    });

    it('an 8 MiB byte stream server → client arrives with its SHA-256 digest', async () => {
      const downloads = backend.server.channel<Readable>('downloads', 1);
      const session = await client();
      const { stream, digest } = randomSource(STREAM_BYTES);
      await downloads.send(stream);
      const got = await digestOf(await session.channel<Readable>('downloads').receive());
      expect(got.bytes).to.equal(STREAM_BYTES);
      expect(got.hex).to.equal(digest());
    });

    it('a client writes 8 MiB into a server-owned Writable; the server gets every byte', async () => {
      const sinks = backend.server.channel<{ sink: Writable }>('sinks', 1);
      const hash = createHash('sha256');
      let bytes = 0;
      const finished = new Promise<void>((resolve) => {
        const sink = new Writable({
          write(chunk: Buffer, _enc, cb) {
            hash.update(chunk);
            bytes += chunk.length;
            cb();
          },
          final(cb) {
            resolve();
            cb();
          },
        });
        void sinks.send({ sink });
      });
      const session = await client();
      const { sink } = await session.channel<{ sink: Writable }>('sinks').receive();
      const { stream, digest } = randomSource(STREAM_BYTES);
      await pipeline(stream, sink);
      await finished;
      expect(bytes).to.equal(STREAM_BYTES);
      expect(hash.digest('hex')).to.equal(digest());
    });

    it('8 MiB each way at once on one byte stream (a Duplex) arrive with their digests and end cleanly, each end proven (§6.2)', async () => {
      const pipes = backend.server.channel<Duplex>('pipes', 1);
      const toServer = randomSource(STREAM_BYTES);
      const toClient = randomSource(STREAM_BYTES);
      // the server's side ends after the client's: nginx grpc_pass and Caddy stop forwarding a
      // request body once the response is complete (docs/proxies.md)
      const serverData = new PassThrough();
      toClient.stream.pipe(serverData, { end: false });
      // the server's Duplex: its data for the client, and a sink that hashes what the client writes
      const hash = createHash('sha256');
      let received = 0;
      const sink = new Writable({
        write(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          received += chunk.length;
          cb();
        },
      });
      const sinkFinished = new Promise<void>((resolve, reject) => sink.once('finish', resolve).once('error', reject));
      void Promise.all([sinkFinished, new Promise((resolve) => toClient.stream.once('end', resolve))]).then(() => serverData.end());
      await pipes.send(Duplex.from({ readable: serverData, writable: sink }));
      const session = await client();
      const wire = await session.channel<Duplex>('pipes').receive();
      // a stream without its end proof (or with a wrong count) would fail here with ERR_STREAM_TRUNCATED
      const [down] = await Promise.all([digestOf(wire), pipeline(toServer.stream, wire)]);
      await sinkFinished;
      expect(down).to.deep.equal({ hex: toClient.digest(), bytes: STREAM_BYTES });
      expect({ hex: hash.digest('hex'), bytes: received }).to.deep.equal({ hex: toServer.digest(), bytes: STREAM_BYTES });
      await until(() => backend.server.stats().byteStreams === 0, 5000, 'the byte stream to close on the server');
    });

    it('capacity 0 is a rendezvous: a send resolves only once the far side took the value', async () => {
      const jobs = backend.server.channel<number>('rendezvous', 0);
      const session = await client();
      const remote = session.channel<number>('rendezvous');
      let done = false;
      const sent = remote.send(42).then(() => (done = true));
      await new Promise((r) => setTimeout(r, 300));
      expect(done).to.equal(false);
      expect(jobs.length).to.equal(0);
      expect(await jobs.receive()).to.equal(42);
      await sent;
      expect(done).to.equal(true);
      // and the other way: the server's send waits for the client's receive
      let served = false;
      const serving = jobs.send(7).then(() => (served = true));
      await new Promise((r) => setTimeout(r, 300));
      expect(served).to.equal(false);
      expect(await remote.receive()).to.equal(7);
      await serving;
    });

    it('a pair stream (what dial opens): both directions on one stream, each channel closed on its own, then the stream is gone', async () => {
      const out = backend.server.channel<number>('pair-out', 16);
      const into = backend.server.channel<number>('pair-in', 16);
      const session = await client();
      const { receive, send } = session.pair<number>('pair-out', 'pair-in');
      const producing = (async () => {
        for (let i = 0; i < 500; i++) await out.send(i);
      })();
      for (let i = 0; i < 500; i++) {
        const v = await receive.receive();
        if (v !== i) expect.fail(`value ${i} arrived as ${v}`);
        await send.send(v * 2);
        expect(await into.receive()).to.equal(i * 2);
      }
      await producing;
      send.close();
      await until(() => into.closed, 5000, 'the server\'s receive channel to close');
      await out.send(-1);
      expect(await receive.receive()).to.equal(-1);
      out.close();
      expect((await rejection(receive.receive())).code).to.equal('ERR_CHANNEL_CLOSED');
      await until(() => session.stats().streams === 1 && session.stats().channels === 0, 5000, 'the pair stream to go');
    });

    it('many values on one channel keep FIFO order, each exactly once', async () => {
      const inbox = backend.server.channel<number>('fifo', 64);
      const session = await client();
      const remote = session.channel<number>('fifo');
      const N = 5000;
      const producing = (async () => {
        for (let i = 0; i < N; i++) await remote.send(i);
      })();
      for (let i = 0; i < N; i++) {
        const v = await inbox.receive();
        if (v !== i) expect.fail(`value ${i} arrived as ${v}`);
      }
      await producing;
      expect(inbox.length).to.equal(0);
    });

    describe('references inside values (hardening)', () => {
      referenceScenarios(() => backend.server, () => client(), 'refs');
    });

    describe('the TCP gateway through it', () => {
      let web: http.Server;
      let echo: net.Server;
      let greeter: net.Server;
      const targets: Record<'web' | 'echo' | 'greeter', string> = { web: '', echo: '', greeter: '' };
      before(async () => {
        // client speaks first (HTTP, echo) and server speaks first (a greeting, as SSH or SMTP)
        web = http.createServer((req, res) => res.end(`hello from ${req.url}`));
        echo = net.createServer((socket) => socket.pipe(socket));
        greeter = net.createServer((socket) => {
          socket.write('220 ready\n');
          socket.pipe(socket);
        });
        for (const [name, srv] of [['web', web], ['echo', echo], ['greeter', greeter]] as const) {
          await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
          targets[name] = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
        }
        createGateway(backend.server, { allow: Object.values(targets) });
      });
      after(async () => {
        web.closeAllConnections();
        for (const srv of [web, echo, greeter]) await new Promise<void>((r) => srv.close(() => r()));
      });

      it('session.forward: HTTP requests through a forwarded port (the client speaks first)', async () => {
        const session = await client();
        const fw = await session.forward({ target: targets.web });
        onTeardown(() => fw.close());
        for (const p of ['/a', '/b']) expect(await httpGet(fw.address.port, p)).to.deep.equal({ status: 200, body: `hello from ${p}` });
      });

      it('dialTcp: the client speaks first, and the target first, each with a 1 MiB echo', async () => {
        const session = await client();
        // well inside the session's 15 s heartbeat, whose PING would also unblock a proxy that holds
        // the tunnel's answer (nginx grpc_pass) until DATA follows on the connection
        const signal = AbortSignal.timeout(5000);
        const conn = await session.dialTcp(targets.echo, { signal });
        const payload = randomBytes(1024 * 1024);
        conn.end(payload);
        const back = await readAll(conn);
        expect(back.equals(payload)).to.equal(true);
        const greeted = await session.dialTcp(targets.greeter, { signal });
        const first = await new Promise<Buffer>((resolve) => greeted.once('data', resolve));
        expect(first.toString()).to.equal('220 ready\n');
        greeted.end('bye\n');
        expect((await readAll(greeted)).toString()).to.equal('bye\n');
      });
    });
  });
}

for (const template of ['nginx-h2.conf', 'nginx-ws.conf'] as const) {
  describe(`behind nginx (${template}), netchan mounted on an Express app`, function () {
    this.timeout(60_000);
    let backend: Backend & { close(): Promise<void> };
    let proxy: RunningProxy;
    const client = async (): Promise<Session> => {
      const { caCert } = await testCertificates();
      const session = await connect(`https://localhost:${proxy.port}/netchan`, { ca: caCert, token: TOKEN, connectTimeoutMs: 5000 });
      onTeardown(() => session.close());
      return session;
    };
    before(async () => {
      backend = await startExpressBackend();
      proxy = await proxyFor(template, backend.port);
    });
    after(async () => {
      await proxy?.stop();
      await backend?.close();
    });
    afterEach(teardown);

    it('the session runs through nginx to the mounted endpoint; the app\'s token check saw every stream', async () => {
      backend.seen.length = 0;
      const session = await client();
      expect(session.transport).to.equal(template === 'nginx-h2.conf' ? 'h2' : 'ws');
      const inbox = backend.server.channel<string>('express-hello', 1);
      await session.channel<string>('express-hello').send('hi');
      expect(await inbox.receive()).to.equal('hi');
      expect(backend.seen.length).to.be.greaterThan(0);
      for (const h of backend.seen) expect(h.authorization).to.equal(`Bearer ${TOKEN}`);
    });

    referenceScenarios(() => backend.server, client, 'express');
  });
}

describe('a session resumes across a proxy restart', function () {
  this.timeout(60_000);
  let backend: Backend;
  let proxy: RunningProxy | undefined;
  before(async () => {
    backend = await startBackend();
  });
  after(async () => {
    await proxy?.stop();
    await backend?.server.close();
  });
  afterEach(teardown);

  for (const template of ['nginx-h2.conf', 'nginx-ws.conf'] as const) {
    it(`${template}: nginx stopped and started again on its port; nothing lost or duplicated, both ways`, async () => {
      proxy = await proxyFor(template, backend.port);
      const port = proxy.port;
      const session = await clientVia(proxy);
      const events: string[] = [];
      session.on('disconnect', () => events.push('disconnect'));
      session.on('reconnect', () => events.push('reconnect'));
      const name = `restart-${template}`;
      const inbox = backend.server.channel<number>(`${name}-in`, 64);
      const outbox = backend.server.channel<number>(`${name}-out`, 64);
      const up = session.channel<number>(`${name}-in`);
      const down = session.channel<number>(`${name}-out`);
      const N = 20_000;
      let sent = 0;
      const producing = (async () => {
        for (let i = 0; i < N; i++) {
          await up.send(i);
          sent++;
        }
      })();
      const feeding = (async () => {
        for (let i = 0; i < N; i++) await outbox.send(i);
      })();
      const gotUp: number[] = [];
      const gotDown: number[] = [];
      const consuming = Promise.all([
        (async () => {
          while (gotUp.length < N) gotUp.push(await inbox.receive());
        })(),
        (async () => {
          while (gotDown.length < N) gotDown.push(await down.receive());
        })(),
      ]);
      await until(() => sent >= 1000 && gotDown.length >= 1000, 20_000, 'traffic before the restart');
      const atStop = { sent, received: gotDown.length };
      await proxy.stop();
      proxy = undefined;
      await until(() => events.includes('disconnect'), 10_000, 'the client to notice the lost connection');
      proxy = await proxyFor(template, backend.port, port);
      await producing;
      await feeding;
      await consuming;
      expect(gotUp).to.deep.equal(Array.from({ length: N }, (_, i) => i));
      expect(gotDown).to.deep.equal(Array.from({ length: N }, (_, i) => i));
      // the restart fell in the middle of both streams of values
      expect(atStop.sent).to.be.lessThan(N);
      expect(atStop.received).to.be.lessThan(N);
      expect(events.slice(0, 2)).to.deep.equal(['disconnect', 'reconnect']);
      expect(session.closed).to.equal(false);
      expect(session.transport).to.equal(template === 'nginx-h2.conf' ? 'h2' : 'ws');
      expect(inbox.length).to.equal(0);
      await proxy.stop();
      proxy = undefined;
    });
  }
});

describe('docs/proxies.md shows the tested configurations', () => {
  /** The fenced code block right after `<!-- template: NAME -->`, if any. */
  const shown = (name: TemplateName): string | undefined => {
    const docs = readFileSync(new URL('../docs/proxies.md', import.meta.url), 'utf8');
    const marker = `<!-- template: ${name} -->`;
    const at = docs.indexOf(marker);
    if (at < 0) return undefined;
    const m = /^```[^\n]*\n([\s\S]*?)^```/m.exec(docs.slice(at + marker.length));
    return m?.[1];
  };
  const tested: TemplateName[] = ['nginx-h2.conf', 'nginx-h2c.conf', 'nginx-ws.conf', 'haproxy.cfg', 'Caddyfile'];
  for (const name of tested) {
    it(`${name}: the block in the docs is the template with the documented values`, () => {
      const block = shown(name);
      expect(block, `docs/proxies.md has no block marked <!-- template: ${name} -->`).to.be.a('string');
      expect(block).to.equal(renderTemplate(name, docValues[name]));
    });
  }
  it('every placeholder of every template has a documented value', () => {
    for (const name of tested) {
      const keys = [...templateText(name).matchAll(/\{\{(\w+)\}\}/g)].map((m) => m[1]!);
      expect(keys.length).to.be.greaterThan(0);
      for (const key of keys) expect(docValues[name], `${name}: {{${key}}}`).to.have.property(key);
    }
  });
});
