import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express, { type NextFunction, type Request, type Response } from 'express';
import request from 'supertest';
import { Channel, connect, createServer, type NetchanServer } from '../lib/index.js';
import { attach, netchan } from '../middleware/express.js';
import { rejection } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, teardown } from './helpers/net.js';

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

async function startApp(): Promise<App> {
  const certs = await testCertificates();
  const server = createServer({});
  const app = express();
  app.get('/hello', (req, res) => {
    res.json({ hello: 'world', httpVersion: req.httpVersion, host: req.hostname, path: req.path, query: req.query });
  });
  app.use('/netchan', requireAuth, netchan(server));
  app.use((_req, res) => res.status(404).send('not here'));
  const httpServer = http2.createSecureServer({ key: certs.key, cert: certs.cert, allowHTTP1: true, minVersion: 'TLSv1.3' }, app as never);
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
    expect(h1.text).to.match(/needs HTTP\/2/);
  });
});
