/**
 * Hardening of connections, sessions and principals: connection-level timeouts (TLS handshake,
 * first request, a connection left without a live session), bounded anonymous sessions, the
 * principal an Express app establishes, and stream ids reused in one session. Each test pins one
 * failure and shows an honest client on the same server still served; the connection tests count
 * the connections open on the server side to show that they close.
 */
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import { WebSocket } from 'ws';
import { NetchanError, connect, createServer, type ConnectOptions, type ServerOptions, type Session } from '../lib/index.js';
import { WsMux, WS_SUBPROTOCOL } from '../lib/transport/ws-mux.js';
import { attach, netchan, type NetchanMiddlewareOptions } from '../middleware/express.js';
import { rejection } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, type Started } from './helpers/net.js';

type Transport = 'h2' | 'ws';
type AnyHeaders = Record<string, unknown>;

/** A stream opened by hand, over HTTP/2 or the WebSocket mux. */
interface RawStream {
  response: Promise<AnyHeaders>;
  closed: Promise<void>;
  write(bytes: Uint8Array): void;
  end(): void;
}

/** A connection that speaks the protocol by hand: it opens streams and never sends a heartbeat. */
interface RawConnection {
  request(headers: Record<string, string>): RawStream;
  /** Resolves once the server closed the connection. */
  closed: Promise<void>;
  isClosed(): boolean;
}

function wrap(stream: NodeJS.EventEmitter & { write(b: Uint8Array): unknown; end(): unknown; resume(): unknown }): RawStream {
  stream.on('error', () => undefined);
  stream.resume();
  const response = new Promise<AnyHeaders>((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('close', () => reject(new Error('stream closed before a response')));
  });
  response.catch(() => undefined);
  return {
    response,
    closed: new Promise((resolve) => stream.once('close', () => resolve())),
    write: (b) => void stream.write(b),
    end: () => void stream.end(),
  };
}

async function rawConnection(s: Started, transport: Transport, headers: Record<string, string> = {}): Promise<RawConnection> {
  const { caCert } = await testCertificates();
  let closed = false;
  if (transport === 'h2') {
    const h2 = http2.connect(s.url, { ca: caCert });
    h2.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => h2.once('connect', () => resolve()).once('error', reject));
    const done = new Promise<void>((resolve) => h2.once('close', () => resolve()));
    void done.then(() => (closed = true));
    onTeardown(() => void h2.destroy());
    return {
      request: (h) => wrap(h2.request({ ':method': 'POST', ':path': new URL(s.url).pathname, 'netchan-version': '1', ...headers, ...h }, { endStream: false })),
      closed: done,
      isClosed: () => closed,
    };
  }
  const ws = new WebSocket(s.url.replace('https:', 'wss:'), WS_SUBPROTOCOL, { ca: caCert, headers: { 'netchan-version': '1', ...headers } });
  ws.on('error', () => undefined);
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
  const mux = new WsMux(ws, 'client', new URL(s.url));
  mux.on('error', () => undefined);
  const done = new Promise<void>((resolve) => mux.once('close', () => resolve()));
  void done.then(() => (closed = true));
  onTeardown(() => mux.destroy());
  return {
    request: (h) => {
      const stream = mux.open({ 'netchan-version': '1', ...headers, ...h });
      // the mux hands the answer over as the contract says; the HTTP/2 stream as an event
      stream.onResponse(({ status, headers: answer }) => stream.emit('response', { ...answer, ':status': status }));
      return wrap(stream);
    },
    closed: done,
    isClosed: () => closed,
  };
}

/** Opens a session on a raw connection; its control stream stays open. */
async function rawSession(conn: RawConnection): Promise<{ id: string; control: RawStream; status: number; headers: AnyHeaders }> {
  const control = conn.request({ 'netchan-kind': 'session' });
  const headers = await control.response;
  return { id: String(headers['netchan-session']), control, status: Number(headers[':status']), headers };
}

/** The connections open on the server side now. */
function openConnections(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

/** Resolves once the server holds at most `n` connections (bounded by `timeoutMs`). */
async function untilConnections(server: net.Server, n: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const open = await openConnections(server);
    if (open <= n) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${open} connections open, expected at most ${n}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Awaits `p`, failing after `ms` with what it waited for. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)));
  try {
    return await Promise.race([p, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** An honest client: a session whose values get through, and that can show it again later. */
async function honest(s: Started, transport: Transport, name = 'jobs', options: ConnectOptions = {}): Promise<Session & { served(): Promise<void> }> {
  const session = await s.client({ transport, ...options });
  const jobs = s.server.channel<number>(name, 1);
  const handle = session.channel<number>(name);
  const disconnects: unknown[] = [];
  session.on('disconnect', (err) => disconnects.push(err));
  const served = async () => {
    await handle.send(7);
    expect(await jobs.receive()).to.equal(7);
    expect(session.closed, 'honest session closed').to.equal(false);
    expect(disconnects, 'honest session lost its connection').to.deep.equal([]);
  };
  await served();
  return Object.assign(session, { served });
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** A plaintext server (h2c and ws: on one port), as `startServer` gives a TLS one. */
async function startInsecure(options: ServerOptions = {}): Promise<Started> {
  const server = createServer({ insecure: true, ...options });
  const { port } = await server.listen(0, '127.0.0.1');
  onTeardown(() => server.close());
  const url = `http://127.0.0.1:${port}/`;
  return {
    server,
    url,
    port,
    async client(clientOptions: ConnectOptions = {}) {
      const session = await connect(url, { insecure: true, ...clientOptions });
      onTeardown(() => session.close());
      return session;
    },
  };
}

/** Opens `n` TCP connections to `port`, each once `setup` ran on it; resolves to them and to their closing. */
async function sockets(port: number, n: number, setup: (port: number) => Promise<net.Socket>): Promise<{ all: net.Socket[]; closed: Promise<void> }> {
  const all = await Promise.all(range(n).map(() => setup(port)));
  for (const socket of all) onTeardown(() => void socket.destroy());
  return { all, closed: Promise.all(all.map((socket) => new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once('close', () => resolve()))))).then(() => undefined) };
}

const tcp = (port: number): Promise<net.Socket> =>
  new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.on('error', () => undefined);
    socket.once('error', reject);
    socket.once('close', () => resolve(socket));
  });

const tlsHttp1 = async (port: number): Promise<net.Socket> => {
  const { caCert } = await testCertificates();
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: caCert, ALPNProtocols: ['http/1.1'] }, () => resolve(socket));
    socket.on('error', () => undefined);
    socket.once('error', reject);
    socket.once('close', () => resolve(socket)); // closed already: what the test waits for
  });
};

interface App extends Started {
  httpServer: http2.Http2SecureServer;
  /** Errors the app's error handler saw. */
  errors: unknown[];
}

/**
 * An Express app on `node:http2` (HTTP/1.1 alongside) with netchan at /netchan behind the app's
 * auth: `user(token)` is what the auth puts in `req.user` for a bearer token (undefined: 401).
 */
async function startApp(
  options: ServerOptions & { user?: (token: string) => unknown; locals?: (token: string) => unknown; middleware?: NetchanMiddlewareOptions } = {},
): Promise<App> {
  const certs = await testCertificates();
  const server = createServer(options);
  const app = express();
  const errors: unknown[] = [];
  app.get('/hello', (_req, res) => void res.send('hello'));
  const auth = (req: Request, res: Response, next: NextFunction): void => {
    const token = /^Bearer (.+)$/.exec(req.get('authorization') ?? '')?.[1];
    if (token === undefined) return void res.status(401).send('who are you?');
    if (options.user) (req as Request & { user?: unknown }).user = options.user(token);
    if (options.locals) (res.locals as Record<string, unknown>).principal = options.locals(token);
    next();
  };
  app.use('/netchan', auth, netchan(server, options.middleware));
  app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    errors.push(err);
    res.status((err as { status?: number }).status ?? 500).type('text/plain').send('app error\n');
  });
  const httpServer = http2.createSecureServer({ key: certs.key, cert: certs.cert, allowHTTP1: true, minVersion: 'TLSv1.3' }, app as never);
  attach(httpServer, app);
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = httpServer.address() as AddressInfo;
  onTeardown(async () => {
    await server.close();
    await new Promise<void>((resolve) => httpServer.close(() => resolve()));
  });
  const url = `https://localhost:${port}/netchan`;
  return {
    server,
    url,
    port,
    httpServer,
    errors,
    async client(clientOptions = {}) {
      const session = await connect(url, { ca: certs.caCert, ...clientOptions });
      onTeardown(() => session.close());
      return session;
    },
  };
}

describe('hardening: stream ids', function () {
  this.timeout(20_000);
  afterEach(teardown);

  describe('reused in one session', () => {
    for (const transport of ['h2', 'ws'] as const) {
      describe(`over ${transport}`, () => {
        const refusedAs = async (stream: RawStream) => {
          const h = await stream.response;
          return [Number(h[':status']), String(h['netchan-error'])];
        };

        it('regression: a duplicate netchan-export id of a channel in one session answered 200; it is 400 ERR_PROTOCOL', async () => {
          const s = await startServer();
          const conn = await rawConnection(s, transport);
          const { id } = await rawSession(conn);
          const exp = { 'netchan-kind': 'channel', 'netchan-session': id, 'netchan-stream': 'c1', 'netchan-export': 'c1', 'netchan-capacity': '0', 'netchan-credit': '1' };
          expect(await refusedAs(conn.request(exp))).to.deep.equal([200, 'undefined']);
          expect(await refusedAs(conn.request(exp))).to.deep.equal([400, 'ERR_PROTOCOL']);
          // a fresh id in the same session is fine, and so is an honest client
          expect(await refusedAs(conn.request({ ...exp, 'netchan-stream': 'c2', 'netchan-export': 'c2' }))).to.deep.equal([200, 'undefined']);
          await honest(s, transport);
        });

        it('regression: a duplicate netchan-export id of a byte stream in one session answered 200; it is 400 ERR_PROTOCOL', async () => {
          const s = await startServer();
          const conn = await rawConnection(s, transport);
          const { id } = await rawSession(conn);
          const exp = { 'netchan-kind': 'bytes', 'netchan-session': id, 'netchan-stream': 'c1', 'netchan-export': 'c1', 'netchan-mode': 'r' };
          expect(await refusedAs(conn.request(exp))).to.deep.equal([200, 'undefined']);
          expect(await refusedAs(conn.request(exp))).to.deep.equal([400, 'ERR_PROTOCOL']);
          expect(await refusedAs(conn.request({ ...exp, 'netchan-mode': 'w' }))).to.deep.equal([400, 'ERR_PROTOCOL']);
          await honest(s, transport);
        });

        it('regression: a stream id reused across kinds (channel, then byte stream, then named channel) answered 200; it is 400 ERR_PROTOCOL', async () => {
          const s = await startServer();
          s.server.channel<number>('named', 1);
          const conn = await rawConnection(s, transport);
          const { id } = await rawSession(conn);
          const base = { 'netchan-session': id, 'netchan-stream': 'c1' };
          const channelExport = { ...base, 'netchan-kind': 'channel', 'netchan-export': 'c1', 'netchan-capacity': '0', 'netchan-credit': '1' };
          expect(await refusedAs(conn.request(channelExport))).to.deep.equal([200, 'undefined']);
          expect(await refusedAs(conn.request({ ...base, 'netchan-kind': 'bytes', 'netchan-export': 'c1', 'netchan-mode': 'r' }))).to.deep.equal([400, 'ERR_PROTOCOL']);
          expect(await refusedAs(conn.request({ ...base, 'netchan-kind': 'channel', 'netchan-name': 'named' }))).to.deep.equal([400, 'ERR_PROTOCOL']);
          // a named channel first, an export of its id next
          const named = { ...base, 'netchan-stream': 'c2', 'netchan-kind': 'channel', 'netchan-name': 'named' };
          expect(await refusedAs(conn.request(named))).to.deep.equal([200, 'undefined']);
          expect(await refusedAs(conn.request({ ...channelExport, 'netchan-stream': 'c2', 'netchan-export': 'c2' }))).to.deep.equal([400, 'ERR_PROTOCOL']);
          await honest(s, transport, 'other');
        });
      });
    }
  });
});

describe('hardening: connection timeouts', function () {
  this.timeout(20_000);
  afterEach(teardown);

  it('regression: a TLS connection that never sends a byte is closed after handshakeTimeoutMs', async () => {
    const s = await startServer({ handshakeTimeoutMs: 300 });
    const listener = s.server.listener!;
    const good = [await honest(s, 'h2'), await honest(s, 'ws', 'jobs-ws')];
    const base = await openConnections(listener);
    const silent = await sockets(s.port, 50, tcp);
    await until(() => silent.all.every((socket) => !socket.connecting), 3000, 'silent sockets connected');
    await untilConnections(listener, base, 5000, 'silent TLS connections closed');
    await within(silent.closed, 3000, 'the silent sockets to see their close');
    for (const g of good) await g.served();
  });

  it('regression: an HTTP/2 connection that never opens a stream, or an HTTP/1.1 one that sends no request, is closed after firstRequestTimeoutMs', async () => {
    const s = await startServer({ firstRequestTimeoutMs: 300 });
    const listener = s.server.listener!;
    const good = [await honest(s, 'h2'), await honest(s, 'ws', 'jobs-ws')];
    const base = await openConnections(listener);
    const { caCert } = await testCertificates();
    const quiet = await Promise.all(
      range(20).map(async () => {
        const h2 = http2.connect(s.url, { ca: caCert });
        h2.on('error', () => undefined);
        onTeardown(() => void h2.destroy());
        const closed = new Promise<void>((resolve) => h2.once('close', () => resolve()));
        await Promise.race([new Promise<void>((resolve, reject) => h2.once('connect', () => resolve()).once('error', reject)), closed]);
        return closed;
      }),
    );
    const http1 = await sockets(s.port, 20, tlsHttp1);
    await untilConnections(listener, base, 5000, 'quiet connections closed');
    await within(Promise.all([...quiet, http1.closed]), 3000, 'the quiet clients to see their close');
    for (const g of good) await g.served();
  });

  it('regression: an h2c socket that says nothing, or only part of the HTTP/2 preface, is closed after firstRequestTimeoutMs', async () => {
    const s = await startInsecure({ firstRequestTimeoutMs: 300 });
    const listener = s.server.listener!;
    const good = [await honest(s, 'h2'), await honest(s, 'ws', 'jobs-ws')];
    const base = await openConnections(listener);
    const silent = await sockets(s.port, 20, tcp);
    const partial = await sockets(s.port, 20, async (port) => {
      const socket = await tcp(port);
      socket.write('PRI * HT');
      return socket;
    });
    const http1 = await sockets(s.port, 20, async (port) => {
      const socket = await tcp(port);
      socket.write('GET / HTTP/1.1\r\nhost: x\r\n'); // headers never finished
      return socket;
    });
    await until(() => [...silent.all, ...partial.all, ...http1.all].every((socket) => !socket.connecting), 3000, 'sockets connected');
    await untilConnections(listener, base, 5000, 'h2c sockets closed');
    await within(Promise.all([silent.closed, partial.closed, http1.closed]), 3000, 'the sockets to see their close');
    for (const g of good) await g.served();
  });

  for (const transport of ['h2', 'ws'] as const) {
    it(`regression: a connection whose session timed out, ended, or was never opened stayed open; it is closed after noSessionTimeoutMs (${transport})`, async () => {
      const s = await startServer({ idleTimeoutMs: 600, heartbeatIntervalMs: 150, noSessionTimeoutMs: 300 });
      const listener = s.server.listener!;
      const good = await honest(s, transport);
      const base = await openConnections(listener);
      // a session that never sends a heartbeat, so the server times it out
      const timedOut = await rawConnection(s, transport);
      expect((await rawSession(timedOut)).status).to.equal(200);
      // a session the client ends, keeping the connection
      const ended = await rawConnection(s, transport);
      const { control, status } = await rawSession(ended);
      expect(status).to.equal(200);
      control.end();
      // a first stream that is refused: no session at all
      const refused = await rawConnection(s, transport);
      const answer = await refused.request({ 'netchan-kind': 'channel', 'netchan-session': '0'.repeat(32), 'netchan-stream': 'c1', 'netchan-name': 'jobs' }).response;
      expect(answer[':status']).to.equal(404);
      await within(Promise.all([timedOut.closed, ended.closed, refused.closed]), 5000, 'the connections without a session to close');
      await untilConnections(listener, base, 5000, 'connections without a session closed');
      // the honest session, live all along, kept its connection
      await good.served();
      expect(await openConnections(listener)).to.equal(base);
    });
  }

  for (const transport of ['h2', 'ws'] as const) {
    it(`regression: under Express a netchan connection whose session timed out stayed open; it is closed after noSessionTimeoutMs, the app's own HTTP/2 connections are not (${transport})`, async () => {
      const app = await startApp({ user: () => 'alice', idleTimeoutMs: 600, heartbeatIntervalMs: 150, noSessionTimeoutMs: 300 });
      const good = await honest(app, transport, 'jobs', { token: 'alice' });
      const { caCert } = await testCertificates();
      // the app's own connection: a page load, then a netchan session on the same connection
      const web = http2.connect(`https://localhost:${app.port}`, { ca: caCert });
      web.on('error', () => undefined);
      onTeardown(() => void web.destroy());
      const get = () =>
        new Promise<number>((resolve, reject) => {
          const req = web.request({ ':path': '/hello' });
          req.once('response', (h) => resolve(Number(h[':status'])));
          req.once('error', reject);
          req.resume();
        });
      expect(await get()).to.equal(200);
      const webSession = web.request({ ':method': 'POST', ':path': '/netchan', 'netchan-version': '1', 'netchan-kind': 'session', authorization: 'Bearer alice' });
      webSession.on('error', () => undefined);
      webSession.resume();
      await new Promise((resolve) => webSession.once('response', resolve));
      await within(new Promise((resolve) => webSession.once('close', resolve)), 5000, 'the heartbeat-less session to time out');
      const base = await openConnections(app.httpServer as unknown as net.Server);
      const raw = await rawConnection(app, transport, { authorization: 'Bearer alice' });
      expect((await rawSession(raw)).status).to.equal(200);
      await within(raw.closed, 5000, 'the netchan connection to close');
      await untilConnections(app.httpServer as unknown as net.Server, base, 5000, 'the netchan connection closed');
      // the app's connection is still open and serves the app
      expect(web.closed || web.destroyed).to.equal(false);
      expect(await get()).to.equal(200);
      await good.served();
    });
  }
});

describe('hardening: anonymous sessions', function () {
  this.timeout(20_000);
  afterEach(teardown);
  const authenticate = ({ headers }: { headers: Record<string, unknown> }) => (headers.authorization === 'Bearer alice' ? 'alice' : '');

  for (const transport of ['h2', 'ws'] as const) {
    describe(`over ${transport}`, () => {
      it('regression: anonymous sessions with no stream open were unbounded per connection; over maxUnusedAnonymousSessionsPerConnection they are refused (429 ERR_LIMIT), and one that opens a channel stops counting', async () => {
        const s = await startServer({ maxUnusedAnonymousSessionsPerConnection: 8 });
        s.server.channel<number>('named', 1);
        const conns = await Promise.all(range(4).map(() => rawConnection(s, transport)));
        const sessions = [];
        for (const conn of conns) {
          for (let i = 0; i < 8; i++) {
            const opened = await rawSession(conn);
            expect(opened.status).to.equal(200);
            sessions.push(opened);
          }
          const over = await rawSession(conn);
          expect([over.status, over.headers['netchan-error']]).to.deep.equal([429, 'ERR_LIMIT']);
          expect(String(over.headers['netchan-message'])).to.match(/this connection has 8 anonymous sessions with no stream open/);
        }
        expect(s.server.stats().sessions).to.equal(32);
        // a session that opens a channel is in use: its connection may open another
        const first = sessions[0]!;
        const ch = conns[0]!.request({ 'netchan-kind': 'channel', 'netchan-session': first.id, 'netchan-stream': 'c1', 'netchan-name': 'named' });
        expect((await ch.response)[':status']).to.equal(200);
        expect((await rawSession(conns[0]!)).status).to.equal(200);
        // an honest anonymous client on its own connection is served
        const good = await honest(s, transport);
        await good.served();
      });

      it('regression: 8 connections opened 8,000 anonymous sessions, none refused; at the defaults each connection gets 64 unused ones', async () => {
        const s = await startServer();
        const conns = await Promise.all(range(8).map(() => rawConnection(s, transport)));
        const statuses = await Promise.all(conns.map(async (conn) => (await Promise.all(range(80).map(() => rawSession(conn)))).map((o) => o.status)));
        for (const perConnection of statuses) {
          expect(perConnection.filter((x) => x === 200)).to.have.length(64);
          expect(perConnection.filter((x) => x === 429)).to.have.length(16);
        }
        expect(s.server.stats().sessions).to.equal(8 * 64);
        const good = await honest(s, transport);
        await good.served();
      });

      it('regression: anonymous sessions were unbounded on the server; beyond maxAnonymousSessions they are refused (429 ERR_LIMIT), authenticated principals still served', async () => {
        const s = await startServer({ maxAnonymousSessions: 20, authenticate });
        const conns = await Promise.all(range(3).map(() => rawConnection(s, transport)));
        const statuses: number[] = [];
        const opened = [];
        for (const conn of conns) {
          for (let i = 0; i < 7; i++) {
            const o = await rawSession(conn);
            statuses.push(o.status);
            if (o.status === 200) opened.push(o);
            else expect(String(o.headers['netchan-message'])).to.match(/20 anonymous sessions open, the limit/);
          }
        }
        expect(statuses.filter((x) => x === 200)).to.have.length(20);
        expect(statuses.at(-1)).to.equal(429);
        const err = await rejection(s.client({ transport }));
        expect([err.code, err.status]).to.deep.equal(['ERR_LIMIT', 429]);
        const alice = await honest(s, transport, 'jobs', { token: 'alice' });
        // an anonymous session ending frees its place
        opened[0]!.control.end();
        await until(() => s.server.stats().sessions === 20, 3000, 'an anonymous session ended');
        const anon = await honest(s, transport, 'jobs-anon');
        await anon.served();
        await alice.served();
      });

      it('regression: an anonymous session with no stream open lived forever; it ends after unusedAnonymousSessionTimeoutMs, busy and authenticated ones live on', async () => {
        // long enough for the honest client to open its channel after its session
        const s = await startServer({ unusedAnonymousSessionTimeoutMs: 1000, authenticate });
        const busy = await honest(s, transport);
        const alice = await s.client({ transport, token: 'alice' });
        const idle = await s.client({ transport });
        await within(new Promise((resolve) => (idle.closed ? resolve(undefined) : idle.once('close', resolve))), 5000, 'the unused session to end');
        expect(idle.closed).to.equal(true);
        expect(s.server.stats().sessions).to.equal(2);
        await busy.served();
        expect(alice.closed).to.equal(false);
      });
    });
  }
});

describe('hardening: principals under Express', function () {
  this.timeout(20_000);
  afterEach(teardown);
  const numberIds: Record<string, number> = { 'token-42': 42, 'token-43': 43 };

  for (const transport of ['h2', 'ws'] as const) {
    describe(`over ${transport}`, () => {
      it("regression: req.user = { id: 42 } was the anonymous principal '', so user 43 could open streams in user 42's session; now 42 is '42' and 43 is refused (403)", async () => {
        const seen: string[] = [];
        const app = await startApp({
          user: (token) => ({ id: numberIds[token] }),
          authorize: ({ principal }) => (seen.push(principal), true),
        });
        const jobs = app.server.channel<number>('jobs', 4);
        const alice = await app.client({ token: 'token-42', transport });
        await alice.channel<number>('jobs').send(1);
        expect(await jobs.receive()).to.equal(1);
        expect(seen).to.deep.equal(['42']);
        // user 43 names user 42's session
        const bob = await rawConnection(app, transport, { authorization: 'Bearer token-43' });
        const stream = bob.request({ 'netchan-kind': 'channel', 'netchan-session': alice.id, 'netchan-stream': 'c99', 'netchan-name': 'jobs' });
        const h = await stream.response;
        expect([h[':status'], h['netchan-error']]).to.deep.equal([403, 'ERR_UNAUTHORIZED']);
        // user 42's session is unharmed, and user 43 has a session of its own
        await alice.channel<number>('jobs').send(2);
        expect(await jobs.receive()).to.equal(2);
        const own = await app.client({ token: 'token-43', transport });
        await own.channel<number>('jobs').send(3);
        expect(await jobs.receive()).to.equal(3);
        expect(seen).to.deep.equal(['42', '42', '43']);
      });

      it('regression: a number as req.user or res.locals.principal was anonymous; it is its string', async () => {
        for (const where of ['user', 'locals'] as const) {
          const seen: string[] = [];
          const app = await startApp({ [where]: (token: string) => numberIds[token], authorize: ({ principal }) => (seen.push(principal), true) });
          app.server.channel<number>('jobs', 4);
          const session = await app.client({ token: 'token-43', transport });
          await session.channel<number>('jobs').send(1);
          expect(seen, where).to.deep.equal(['43']);
        }
      });

      it('regression: a principal that is neither string nor number (req.user without id, an object from principal()) was silently anonymous; the request is refused with a NetchanError', async () => {
        const cases: Parameters<typeof startApp>[0][] = [
          { user: () => ({ name: 'no id here' }) },
          { user: () => ({ id: { nested: true } }) },
          { user: () => true },
          { locals: () => ({ id: 42 }) },
          { user: () => 'someone', middleware: { principal: () => ({ id: 42 }) as never } },
        ];
        for (const options of cases) {
          const app = await startApp(options);
          app.server.channel<number>('jobs', 4);
          const err = await rejection(app.client({ token: 'token-42', transport }));
          expect(err.code, JSON.stringify(options)).to.equal('ERR_INVALID_ARGUMENT');
          expect(err.message).to.match(/not a string or number/);
          expect(app.errors).to.have.length(1);
          expect(app.errors[0]).to.be.instanceOf(NetchanError).with.property('code', 'ERR_INVALID_ARGUMENT');
          expect(app.server.stats().sessions).to.equal(0);
        }
        // the app's own traffic is unaffected
        const app = await startApp({ user: () => 'alice' });
        await honest(app, transport, 'jobs', { token: 'token-alice' });
      });
    });
  }

  it('a principal option that is not a function is a NetchanError at setup', () => {
    expect(() => netchan(createServer(), { principal: 'alice' as never })).to.throw(NetchanError).with.property('code', 'ERR_INVALID_ARGUMENT');
  });
});

