import https from 'node:https';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { WebSocket } from 'ws';
import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import request from 'supertest';
import { Channel, connect, createServer, type NetchanServer, type ServerOptions } from '../lib/index.js';
import { WsMux, WS_SUBPROTOCOL } from '../lib/transport/ws-mux.js';
import type { WireResponse } from '../lib/transport/contract.js';
import { attach, netchan } from '../middleware/express.js';
import { rejection } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, teardown, until } from './helpers/net.js';

const TOKENS: Record<string, string> = { 'token-alice': 'alice', 'token-bob': 'bob' };

/** The app's own auth: a bearer token names the user; no token, no entry. */
function requireAuth(req: Request, res: Response, next: NextFunction): void {
  const m = /^Bearer (.+)$/.exec(req.get('authorization') ?? '');
  const user = m ? TOKENS[m[1]!] : undefined;
  if (!user) {
    res.status(401).type('text/plain').send('who are you?');
    return;
  }
  (req as Request & { user?: unknown }).user = { id: user };
  next();
}

interface App {
  url: string;
  origin: string;
  server: NetchanServer;
  caCert: string;
}

/**
 * The app on `node:http2` with HTTP/1.1 alongside, or (`http1Only`) on a plain `node:https`
 * server, where netchan gets through only as the WebSocket fallback.
 */
async function startApp(options: ServerOptions & { http1Only?: boolean } = {}): Promise<App> {
  const certs = await testCertificates();
  const server = createServer(options);
  const app = express();
  app.get('/hello', (req, res) => {
    res.json({ hello: 'world', httpVersion: req.httpVersion, host: req.hostname, path: req.path, query: req.query });
  });
  app.use('/netchan', requireAuth, netchan(server));
  app.use((_req, res) => res.status(404).send('not here'));
  const httpServer = options.http1Only
    ? https.createServer({ key: certs.key, cert: certs.cert, minVersion: 'TLSv1.3' }, app as never)
    : http2.createSecureServer({ key: certs.key, cert: certs.cert, allowHTTP1: true, minVersion: 'TLSv1.3' }, app as never);
  attach(httpServer, app);
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const { port } = httpServer.address() as AddressInfo;
  onTeardown(async () => {
    await server.close();
    await new Promise<void>((resolve) => httpServer.close(() => resolve()));
  });
  return { url: `https://localhost:${port}/netchan`, origin: `https://localhost:${port}`, server, caCert: certs.caCert };
}

function h2Get(origin: string, caCert: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(origin, { ca: caCert });
    client.on('error', reject);
    const req = client.request({ ':path': path });
    let body = '';
    let status = 0;
    req.on('response', (h) => (status = Number(h[':status'])));
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      client.close();
      resolve({ status, body });
    });
    req.on('error', reject);
  });
}

describe('netchan/express: mounted on an Express 5 app', () => {
  afterEach(teardown);

  it('an authorized session works through the app, with reply channels', async () => {
    const { url, server, caCert } = await startApp();
    const squares = server.channel<{ n: number; reply: Channel<number> }>('square', 8);
    void (async () => {
      for await (const { n, reply } of squares) await reply.send(n * n);
    })();
    const session = await connect(url, { ca: caCert, token: 'token-alice' });
    onTeardown(() => session.close());
    const square = session.channel<{ n: number; reply: Channel<number> }>('square');
    for (const n of [2, 3, 12]) {
      const reply = new Channel<number>();
      await square.send({ n, reply });
      expect(await reply.receive()).to.equal(n * n);
    }
    expect(server.stats().sessions).to.equal(1);
  });

  it('an unauthorized client gets ERR_UNAUTHORIZED and nothing is opened', async () => {
    const { url, server, caCert } = await startApp();
    server.channel<number>('square', 8);
    const err = await rejection(connect(url, { ca: caCert, token: 'wrong' }));
    expect(err.code).to.equal('ERR_UNAUTHORIZED');
    const none = await rejection(connect(url, { ca: caCert }));
    expect(none.code).to.equal('ERR_UNAUTHORIZED');
    expect(server.stats()).to.include({ sessions: 0, streams: 0, channels: 0 });
  });

  it('a stream naming another principal\'s session is refused (403 ERR_UNAUTHORIZED)', async () => {
    const { url, origin, server, caCert } = await startApp();
    server.channel<number>('square', 8);
    const alice = await connect(url, { ca: caCert, token: 'token-alice' });
    onTeardown(() => alice.close());
    const client = http2.connect(origin, { ca: caCert });
    onTeardown(() => client.close());
    const stream = client.request({
      ':method': 'POST',
      ':path': '/netchan',
      authorization: 'Bearer token-bob',
      'netchan-version': '1',
      'netchan-kind': 'channel',
      'netchan-session': alice.id,
      'netchan-stream': 'c99',
      'netchan-name': 'square',
    });
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
    stream.resume();
    expect(headers[':status']).to.equal(403);
    expect(headers['netchan-error']).to.equal('ERR_UNAUTHORIZED');
    stream.close();
    // alice's own session is unharmed
    const h = alice.channel<number>('square');
    await h.send(5);
    expect(server.stats().sessions).to.equal(1);
  });

  it("the app's own routes still answer over HTTP/2 and HTTP/1.1", async () => {
    const { origin, caCert } = await startApp();
    const h2 = await h2Get(origin, caCert, '/hello?x=1');
    expect(h2.status).to.equal(200);
    expect(JSON.parse(h2.body)).to.deep.equal({ hello: 'world', httpVersion: '2.0', host: 'localhost', path: '/hello', query: { x: '1' } });
    const h1 = await request(origin).get('/hello?x=2').ca(caCert);
    expect(h1.status).to.equal(200);
    expect(h1.body).to.deep.equal({ hello: 'world', httpVersion: '1.1', host: 'localhost', path: '/hello', query: { x: '2' } });
    const missing = await request(origin).get('/nope').ca(caCert);
    expect(missing.status).to.equal(404);
  });

  it('over HTTP/1.1 the app refuses unauthenticated netchan requests (401) and answers 426 to authenticated ones', async () => {
    const { origin, caCert } = await startApp();
    const anon = await request(origin).post('/netchan').set('netchan-version', '1').set('netchan-kind', 'session').ca(caCert);
    expect(anon.status).to.equal(401);
    expect(anon.text).to.equal('who are you?');
    const h1 = await request(origin).post('/netchan').set('authorization', 'Bearer token-alice').set('netchan-version', '1').set('netchan-kind', 'session').ca(caCert);
    expect(h1.status).to.equal(426);
    expect(h1.headers['netchan-error']).to.equal('ERR_PROTOCOL');
    expect(h1.text).to.match(/needs a WebSocket upgrade/);
  });

  for (const http1Only of [false, true]) {
    it(`an authorized session works over the WebSocket fallback${http1Only ? ' (auto, on an HTTP/1.1-only server)' : ' (transport: ws)'}`, async () => {
      const { url, server, caCert } = await startApp({ http1Only });
      const squares = server.channel<{ n: number; reply: Channel<number> }>('square', 8);
      void (async () => {
        for await (const { n, reply } of squares) await reply.send(n * n);
      })();
      const session = await connect(url, { ca: caCert, token: 'token-alice', transport: http1Only ? 'auto' : 'ws' });
      onTeardown(() => session.close());
      expect(session.transport).to.equal('ws');
      const square = session.channel<{ n: number; reply: Channel<number> }>('square');
      for (const n of [2, 3, 12]) {
        const reply = new Channel<number>();
        await square.send({ n, reply });
        expect(await reply.receive()).to.equal(n * n);
      }
      expect(server.stats().sessions).to.equal(1);
      await session.close();
      await until(() => server.stats().sessions === 0 && server.stats().streams === 0, 3000, 'server back at baseline');
    });
  }

  it('over the WebSocket fallback an unauthorized client gets ERR_UNAUTHORIZED and nothing is opened', async () => {
    const { url, origin, server, caCert } = await startApp({ http1Only: true });
    server.channel<number>('square', 8);
    const err = await rejection(connect(url, { ca: caCert, token: 'wrong', transport: 'ws' }));
    expect(err.code).to.equal('ERR_UNAUTHORIZED');
    const auto = await rejection(connect(url, { ca: caCert }));
    expect(auto.code).to.equal('ERR_UNAUTHORIZED');
    expect(server.stats()).to.include({ sessions: 0, streams: 0, channels: 0 });
    // the app's routes still answer on the HTTP/1.1-only server
    const h1 = await request(origin).get('/hello').ca(caCert);
    expect(h1.status).to.equal(200);
    // an upgrade the app does not route to netchan gets the app's own 404
    const stray = await rejection(connect(`${origin}/elsewhere`, { ca: caCert, token: 'token-alice', transport: 'ws' }));
    expect(stray.code).to.equal('ERR_CONNECT');
    expect(stray.message).to.match(/404/);
  });

  it("a WebSocket stream naming another principal's session is refused (403 ERR_UNAUTHORIZED)", async () => {
    const { url, server, caCert } = await startApp();
    server.channel<number>('square', 8);
    const alice = await connect(url, { ca: caCert, token: 'token-alice' });
    onTeardown(() => alice.close());
    // bob's WebSocket, speaking the mux by hand
    const ws = new WebSocket(url.replace('https:', 'wss:'), WS_SUBPROTOCOL, { ca: caCert, headers: { authorization: 'Bearer token-bob', 'netchan-version': '1' } });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const mux = new WsMux(ws, 'client', new URL(url));
    onTeardown(() => mux.destroy());
    const stream = mux.open({ 'netchan-version': '1', 'netchan-kind': 'channel', 'netchan-session': alice.id, 'netchan-stream': 'c99', 'netchan-name': 'square' });
    const { status, headers } = await new Promise<WireResponse>((resolve) => stream.onResponse(resolve));
    stream.resume();
    expect(status).to.equal(403);
    expect(headers['netchan-error']).to.equal('ERR_UNAUTHORIZED');
    const h = alice.channel<number>('square');
    await h.send(5);
    expect(server.stats().sessions).to.equal(1);
  });

  for (const transport of ['h2', 'ws'] as const) {
    it(`sessions per principal are limited (ERR_LIMIT over ${transport}), other principals unaffected`, async () => {
      const { url, server, caCert } = await startApp({ maxSessionsPerPrincipal: 2 });
      const open = async (token: string) => {
        const s = await connect(url, { ca: caCert, token, transport });
        onTeardown(() => s.close());
        return s;
      };
      const [a1] = [await open('token-alice'), await open('token-alice')];
      const err = await rejection(open('token-alice'));
      expect(err.code).to.equal('ERR_LIMIT');
      expect(err.status).to.equal(429);
      const bob = await open('token-bob');
      expect(bob.closed).to.equal(false);
      expect(server.stats().sessions).to.equal(3);
      // a session ending frees its place
      await a1!.close();
      await until(() => server.stats().sessions === 2, 3000, 'session ended on the server');
      const again = await open('token-alice');
      expect(again.closed).to.equal(false);
    });
  }
});
