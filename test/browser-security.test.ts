/**
 * What the browser support lets a hostile page or client do on the server side: the Origin
 * policy, the bearer token offered as a WebSocket subprotocol, and web streams joined to byte
 * streams. Real TLS servers and raw requests; the page's side is test/browser.test.ts.
 */
import http from 'node:http';
import { Writable, type Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { expect } from 'chai';
import express from 'express';
import { createServer } from '../lib/index.js';
import { webBytes } from '../lib/session/web-streams.js';
import { WS_BEARER_PREFIX, bearerOfSubprotocols, bearerSubprotocol } from '../lib/wire/mux-frames.js';
import { attach, netchan } from '../middleware/express.js';
import { rejection } from './helpers/assert.js';
import { onTeardown, startServer, teardown, until } from './helpers/net.js';
import { rawUpgrade } from './helpers/upgrade.js';
import { collectingSink } from './helpers/streams.js';

/** A token's subprotocol made by hand (any bytes, not only what the browser client makes). */
function bearerOf(token: string | Buffer): string {
  return WS_BEARER_PREFIX + Buffer.from(token).toString('base64url');
}

describe('browser support against hostile input', function () {
  this.timeout(20_000);
  afterEach(teardown);

  describe('allowedOrigins', () => {
    it('a function that throws on an Origin refuses it (403 ERR_FORBIDDEN_ORIGIN), on a WebSocket upgrade and on an HTTP/2 stream', async () => {
      // `new URL('null')` throws: an ordinary policy meets a sandboxed frame's Origin
      const started = await startServer({ allowedOrigins: (origin) => new URL(origin).hostname === 'app.example' });
      const answer = await rawUpgrade(started.port, '/', { origin: 'null' });
      expect(answer).to.match(/^HTTP\/1\.1 403 /);
      expect(answer).to.match(/netchan-error: ERR_FORBIDDEN_ORIGIN/i);
      const err = await rejection(started.client({ transport: 'h2', headers: { origin: 'null' }, reconnect: false }));
      expect(err.code).to.equal('ERR_FORBIDDEN_ORIGIN');
      // the server still serves
      const session = await started.client({ transport: 'ws', headers: { origin: 'https://app.example' } });
      expect(session.transport).to.equal('ws');
    });

    it('a list entry no browser ever sends (a path, upper case, a default port, null, punycode unspelled) or a stateful RegExp is refused when the server is created', () => {
      for (const entry of ['https://app.example.com/', 'https://App.example.com', 'https://app.example.com:443', 'app.example.com', 'null', 'https://bücher.example', /app/g, /app/y]) {
        expect(() => createServer({ allowedOrigins: [entry] }), String(entry)).to.throw().with.property('code', 'ERR_INVALID_ARGUMENT');
      }
      for (const entry of ['https://app.example.com', 'http://localhost:5173', 'https://[::1]:8443', 'https://xn--bcher-kva.example', /^https:\/\/[a-z]+\.example\.com$/]) {
        expect(() => createServer({ allowedOrigins: [entry] }), String(entry)).not.to.throw();
      }
    });

    it("same-origin compares the Origin with the Host as URLs do: a Host with the scheme's default port (a proxy's $host:$server_port) or another spelling of an IPv6 address is the same host", async () => {
      const started = await startServer();
      const upgrade = (host: string, origin: string): Promise<string> => rawUpgrade(started.port, '/', { host, origin });
      expect(await upgrade('app.example:443', 'https://app.example')).to.match(/^HTTP\/1\.1 101 /);
      expect(await upgrade('APP.example', 'https://app.example')).to.match(/^HTTP\/1\.1 101 /);
      expect(await upgrade('[0:0:0:0:0:0:0:1]:8443', 'https://[::1]:8443')).to.match(/^HTTP\/1\.1 101 /);
      // still another host, or another port
      expect(await upgrade('app.example:444', 'https://app.example')).to.match(/^HTTP\/1\.1 403 /);
      expect(await upgrade('app.example:443', 'https://app.example:8443')).to.match(/^HTTP\/1\.1 403 /);
      expect(await upgrade('app.example.evil', 'https://app.example')).to.match(/^HTTP\/1\.1 403 /);
      expect(await upgrade('app.example', 'https://app.example.evil')).to.match(/^HTTP\/1\.1 403 /);
      expect(await upgrade('app.example@evil', 'https://app.example')).to.match(/^HTTP\/1\.1 403 /);
    });

    it("same-origin: over TLS, a page of plain http on the same host is not the server's own origin (anyone on the network path writes that page)", async () => {
      const started = await startServer();
      expect(await rawUpgrade(started.port, '/', { host: 'app.example', origin: 'http://app.example' })).to.match(/^HTTP\/1\.1 403 /);
      expect(await rawUpgrade(started.port, '/', { host: 'app.example', origin: 'https://app.example' })).to.match(/^HTTP\/1\.1 101 /);
      const port = started.port;
      const err = await rejection(started.client({ transport: 'h2', headers: { origin: `http://localhost:${port}` }, reconnect: false }));
      expect(err.code).to.equal('ERR_FORBIDDEN_ORIGIN');
      // plaintext behind a TLS-terminating proxy: the server cannot tell the scheme, the host
      // decides (without the proxy's X-Forwarded-Host, a foreign name on a loopback server is
      // refused as DNS rebinding: test/browser-server.test.ts)
      const plain = await startServer({ insecure: true, key: undefined, cert: undefined });
      expect(await rawUpgrade(plain.port, '/', { host: 'app.example', origin: 'http://app.example', 'x-forwarded-host': 'app.example' }, true)).to.match(/^HTTP\/1\.1 101 /);
    });
  });

  describe('the bearer token as a subprotocol', () => {
    it('is not taken when it is no header value (control characters, beyond latin1): no header injection into the app', () => {
      expect(bearerOfSubprotocols([bearerOf('ok\r\nx-admin: 1')])).to.equal(undefined);
      expect(bearerOfSubprotocols([bearerOf('nul\0')])).to.equal(undefined);
      expect(bearerOfSubprotocols([bearerOf('del\x7f')])).to.equal(undefined);
      expect(bearerOfSubprotocols([bearerOf('euro €')])).to.equal(undefined);
      // what a header can carry is taken as it is
      expect(bearerOfSubprotocols([bearerOf('tök=n/with+odd chars\tand a tab')])).to.equal('tök=n/with+odd chars\tand a tab');
      // the browser client says so instead of connecting without it
      expect(() => bearerSubprotocol('ok\nx')).to.throw().with.property('code', 'ERR_INVALID_ARGUMENT');
      expect(bearerOfSubprotocols([bearerSubprotocol('tök=n')])).to.equal('tök=n');
    });

    it("on the standalone server, one with CR LF never reaches authenticate's headers", async () => {
      const seen: (string | string[] | undefined)[] = [];
      const started = await startServer({
        authenticate: ({ headers }) => {
          seen.push(headers.authorization);
          return headers.authorization === 'Bearer ok' ? 'ok' : false;
        },
      });
      const injected = await rawUpgrade(started.port, '/', { 'sec-websocket-protocol': `netchan.v1, ${bearerOf('ok\r\nx-admin: 1')}` });
      expect(injected).to.match(/^HTTP\/1\.1 401 /);
      expect(await rawUpgrade(started.port, '/', { 'sec-websocket-protocol': `netchan.v1, ${bearerOf('ok')}` })).to.match(/^HTTP\/1\.1 101 /);
      expect(seen).to.deep.equal([undefined, 'Bearer ok']);
    });

    it("attach makes it the authorization header of netchan's upgrades only: a page cannot set one on the app's other WebSocket routes", async () => {
      const server = createServer();
      onTeardown(() => server.close());
      const app = express();
      const seen: Record<string, string | undefined> = {};
      app.use((req, _res, next) => {
        seen[req.path] = req.headers.authorization;
        next();
      });
      app.use('/netchan', netchan(server));
      app.get('/chat', (_req, res) => res.status(400).send('no chat here'));
      const web = http.createServer(app);
      attach(web, app);
      await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
      onTeardown(() => new Promise<void>((resolve) => web.close(() => resolve())));
      const { port } = web.address() as AddressInfo;
      const origin = { origin: `http://127.0.0.1:${port}` };
      // a page's WebSocket to the app's own route, offering a token of the page's choosing
      await rawUpgrade(port, '/chat', { ...origin, 'sec-websocket-protocol': `chat, ${bearerOf('attacker')}` }, true);
      expect(await rawUpgrade(port, '/netchan', { ...origin, 'sec-websocket-protocol': `netchan.v1, ${bearerOf('page')}` }, true)).to.match(/^HTTP\/1\.1 101 /);
      expect(seen).to.deep.equal({ '/chat': undefined, '/netchan': 'Bearer page' });
    });
  });

  describe('web streams on byte streams', () => {
    /**
     * A Writable the server sends, as a browser session gives it to the page: the Node client's
     * byte stream made a web WritableStream, exactly as BrowserSession does.
     */
    async function pageSink(): Promise<{ sink: Writable; got: Buffer[]; web: WritableStream<Uint8Array> }> {
      const started = await startServer();
      const sinks = started.server.channel<{ sink: Writable }>('sinks', 1);
      const { sink, got } = collectingSink();
      void sinks.send({ sink });
      const session = await started.client({ transport: 'ws' });
      const { sink: remote } = await session.channel<{ sink: Duplex }>('sinks').receive();
      return { sink, got, web: webBytes(remote, 'w') as WritableStream<Uint8Array> };
    }

    it("a page's write of what is no bytes fails the byte stream (ERR_INVALID_ARGUMENT) instead of leaving the server's Writable open", async () => {
      const { sink, got, web } = await pageSink();
      const writer = web.getWriter();
      await writer.write(new TextEncoder().encode('one'));
      const err = await rejection(writer.write(new ArrayBuffer(3) as unknown as Uint8Array));
      expect(err.code).to.equal('ERR_INVALID_ARGUMENT');
      // the server's side fails too, while the session goes on
      await until(() => sink.destroyed, 5000, "the server's Writable to fail");
      expect(Buffer.concat(got).toString()).to.equal('one');
      expect((await rejection(writer.closed)).code).to.equal('ERR_INVALID_ARGUMENT');
    });

    it('a web WritableStream whose write rejects with no reason fails its byte stream: the bytes are not taken for written', async () => {
      const started = await startServer();
      const sinks = started.server.channel<{ sink: Writable }>('sinks', 1);
      const session = await started.client();
      let writes = 0;
      // `Promise.reject()`, or a sink's `controller.error()`: a rejection whose reason is undefined
      const web = new WritableStream<Uint8Array>({
        write() {
          writes++;
          return Promise.reject();
        },
      });
      await session.channel('sinks').send({ sink: web });
      const { sink } = await sinks.receive();
      sink.on('error', () => undefined);
      const chunk = Buffer.alloc(64 * 1024);
      let written = 0;
      while (written < 8 * 1024 * 1024 && !sink.destroyed) {
        written += chunk.length;
        if (!sink.write(chunk)) await new Promise((resolve) => sink.once('drain', resolve).once('close', resolve));
      }
      // the server learns at once (a window's worth), not after 8 MiB the program never took
      expect(sink.destroyed).to.equal(true);
      expect(written).to.be.below(8 * 1024 * 1024);
      expect(writes).to.equal(1);
    });
  });
});
