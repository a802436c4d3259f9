/**
 * The server's side of pages (docs/PROTOCOL.md §7.1 "From a web page"), checked from Node with
 * real TLS and a real `ws` client standing in for a browser: no `netchan-version` header on the
 * upgrade, the bearer token as a subprotocol, and the `Origin` policy.
 */
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
import { expect } from 'chai';
import { WebSocket } from 'ws';
import { ErrorCodes, createServer } from '../lib/index.js';
import { WS_SUBPROTOCOL, bearerOfSubprotocols, bearerSubprotocol } from '../lib/wire/mux-frames.js';
import { checkOriginPolicy, originRefusal } from '../lib/server/origin.js';
import { testCertificates } from './helpers/certs.js';
import { startServer, teardown, onTeardown } from './helpers/net.js';
import { rawUpgrade } from './helpers/upgrade.js';

/** Opens a WebSocket as a page would (subprotocols, Origin; no netchan-version) and says how the upgrade was answered. */
async function upgrade(url: string, protocols: string[], headers: Record<string, string> = {}): Promise<{ status: number; code?: string; protocol?: string }> {
  const certs = await testCertificates();
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace('https:', 'wss:'), protocols, { ca: certs.caCert, headers });
    ws.once('unexpected-response', (_req, res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, code: res.headers['netchan-error'] as string | undefined });
    });
    ws.once('open', () => {
      resolve({ status: 101, protocol: ws.protocol });
      ws.terminate();
    });
    ws.once('error', (err) => reject(err));
  });
}

describe('pages: the server side (PROTOCOL §7.1)', function () {
  this.timeout(20_000);
  afterEach(teardown);

  it('encodes bearer tokens as the document prints them, and ignores a subprotocol that is not base64url of UTF-8', () => {
    const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');
    for (const token of ['s3cr3t', 'tök=n/with+odd chars']) {
      const sub = bearerSubprotocol(token);
      expect(doc).to.include(`| \`${token}\` | \`${sub}\` |`);
      expect(bearerOfSubprotocols([WS_SUBPROTOCOL, sub])).to.equal(token);
    }
    for (const bad of ['netchan.bearer.', 'netchan.bearer.a+b', 'netchan.bearer.a=b', 'netchan.bearer.wyg']) {
      expect(bearerOfSubprotocols([bad]), bad).to.equal(undefined);
    }
    expect(bearerOfSubprotocols([WS_SUBPROTOCOL])).to.equal(undefined);
  });

  it('a standalone server takes an upgrade without netchan-version, and a token offered as a subprotocol, never selecting it', async () => {
    const seen: (string | undefined)[] = [];
    const started = await startServer({
      authenticate: ({ headers }) => {
        const auth = headers.authorization as string | undefined;
        seen.push(auth);
        return auth === 'Bearer tök=n' ? 'bob' : false;
      },
    });
    expect(await upgrade(started.url, [WS_SUBPROTOCOL, bearerSubprotocol('tök=n')])).to.deep.equal({ status: 101, protocol: WS_SUBPROTOCOL });
    expect(await upgrade(started.url, [WS_SUBPROTOCOL, bearerSubprotocol('wrong')])).to.deep.include({ status: 401, code: ErrorCodes.UNAUTHORIZED });
    // a real authorization header wins over the subprotocol
    expect(await upgrade(started.url, [WS_SUBPROTOCOL, bearerSubprotocol('tök=n')], { authorization: 'Bearer other' })).to.deep.include({ status: 401 });
    // another version is still refused
    expect(await upgrade(started.url, [WS_SUBPROTOCOL, bearerSubprotocol('tök=n')], { 'netchan-version': '2' })).to.deep.include({ status: 400, code: ErrorCodes.PROTOCOL });
    expect(seen).to.deep.equal(['Bearer tök=n', 'Bearer wrong', 'Bearer other', 'Bearer tök=n']);
  });

  it('refuses a foreign Origin with 403 ERR_FORBIDDEN_ORIGIN by default, serves its own and programs without one', async () => {
    const started = await startServer();
    const own = `https://localhost:${started.port}`;
    expect(await upgrade(started.url, [WS_SUBPROTOCOL], { origin: 'https://evil.example' })).to.deep.equal({ status: 403, code: ErrorCodes.FORBIDDEN_ORIGIN });
    expect(await upgrade(started.url, [WS_SUBPROTOCOL], { origin: 'null' })).to.deep.equal({ status: 403, code: ErrorCodes.FORBIDDEN_ORIGIN });
    expect(await upgrade(started.url, [WS_SUBPROTOCOL], { origin: `https://localhost:${started.port + 1}` })).to.deep.include({ status: 403 });
    expect(await upgrade(started.url, [WS_SUBPROTOCOL], { origin: own })).to.deep.include({ status: 101 });
    expect(await upgrade(started.url, [WS_SUBPROTOCOL])).to.deep.include({ status: 101 });
    // the session of a Node client (no Origin) is unaffected
    const session = await started.client({ transport: 'ws' });
    expect(session.transport).to.equal('ws');
  });

  it('a plaintext loopback server refuses a page that reached it by a foreign name (DNS rebinding), unless a proxy says so or the page is listed', async () => {
    const plain = createServer({ insecure: true });
    const { port } = await plain.listen(0, '127.0.0.1');
    onTeardown(() => plain.close());
    const listed = createServer({ insecure: true, allowedOrigins: [`http://rebind.example:${port + 1}`] });
    const other = await listed.listen(0, '127.0.0.1');
    onTeardown(() => listed.close());
    const ask = (p: number, host: string, origin: string, extra: Record<string, string> = {}): Promise<string> => rawUpgrade(p, '/', { host, origin, ...extra }, true);
    const evil = `rebind.example:${port}`;
    const refused = await ask(port, evil, `http://${evil}`);
    expect(refused).to.match(/^HTTP\/1\.1 403 /);
    expect(refused).to.match(/netchan-error: ERR_FORBIDDEN_ORIGIN/i);
    expect(refused).to.match(/DNS rebinding/);
    expect(await ask(port, `localhost:${port}`, `http://localhost:${port}`)).to.match(/^HTTP\/1\.1 101 /);
    expect(await ask(port, `127.0.0.1:${port}`, `http://127.0.0.1:${port}`)).to.match(/^HTTP\/1\.1 101 /);
    // behind a proxy on this machine (it says so), the page's own name is its origin
    expect(await ask(port, evil, `http://${evil}`, { 'x-forwarded-host': evil })).to.match(/^HTTP\/1\.1 101 /);
    // a page named in allowedOrigins is served whatever name it used
    const named = `rebind.example:${other.port}`;
    expect(await ask(other.port, named, `http://${named}`)).to.match(/^HTTP\/1\.1 403 /);
    expect(await ask(other.port, `rebind.example:${port + 1}`, `http://rebind.example:${port + 1}`)).to.match(/^HTTP\/1\.1 101 /);
  });

  it('checks an HTTP/2 stream that carries an Origin the same way', async () => {
    const certs = await testCertificates();
    const started = await startServer({ allowedOrigins: ['https://app.example'] });
    const h2 = http2.connect(`https://localhost:${started.port}`, { ca: certs.caCert });
    onTeardown(() => h2.close());
    const ask = (origin: string): Promise<{ status: number; code: unknown }> =>
      new Promise((resolve, reject) => {
        const req = h2.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-kind': 'session', origin });
        req.on('response', (h) => {
          resolve({ status: h[':status'] as number, code: h['netchan-error'] });
          req.close();
        });
        req.on('error', reject);
        req.end();
      });
    expect(await ask('https://evil.example')).to.deep.equal({ status: 403, code: ErrorCodes.FORBIDDEN_ORIGIN });
    expect((await ask('https://app.example')).status).to.equal(200);
  });

  it('the policy: lists, RegExps, functions, *, X-Forwarded-Host, and a clear error for a bad option', () => {
    const refused = (policy: Parameters<typeof originRefusal>[0], origin: string, host = 'app.example', fwd?: string): boolean => originRefusal(policy, origin, host, fwd) !== undefined;
    expect(refused('same-origin', 'https://app.example')).to.equal(false);
    expect(refused('same-origin', 'https://APP.example')).to.equal(false);
    expect(refused('same-origin', 'https://app.example:8443')).to.equal(true);
    expect(refused('same-origin', 'https://app.example.evil')).to.equal(true);
    expect(refused('same-origin', 'https://public.example', 'backend:3000', 'public.example')).to.equal(false);
    expect(refused('same-origin', 'not a url')).to.equal(true);
    expect(refused(['https://a.example'], 'https://a.example')).to.equal(false);
    expect(refused(['https://a.example'], 'http://a.example')).to.equal(true);
    expect(refused([/^https:\/\/[a-z]+\.example$/], 'https://b.example')).to.equal(false);
    expect(refused((o) => o.endsWith('.test'), 'https://x.test')).to.equal(false);
    expect(refused('*', 'https://anything')).to.equal(false);
    expect(originRefusal('same-origin', undefined, 'app.example', undefined)).to.equal(undefined);
    expect(() => checkOriginPolicy('any')).to.throw().with.property('code', ErrorCodes.INVALID_ARGUMENT);
    expect(() => createServer({ allowedOrigins: [''] as never })).to.throw().with.property('code', ErrorCodes.INVALID_ARGUMENT);
  });
});
