/**
 * Hardening of connections, sessions and principals: connection-level timeouts (TLS handshake,
 * first request, a connection left without a live session), bounded anonymous sessions, the
 * principal an Express app establishes, and stream ids reused in one session. Each test pins one
 * failure, counts the connections open on the server side to show that they close, and shows an
 * honest client on the same server still served.
 */
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { expect } from 'chai';
import { WebSocket } from 'ws';
import { connect, type Session } from '../lib/index.js';
import { WsMux, WS_SUBPROTOCOL } from '../lib/ws-mux.js';
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
  const mux = new WsMux(ws, 'client');
  mux.on('error', () => undefined);
  const done = new Promise<void>((resolve) => mux.once('close', () => resolve()));
  void done.then(() => (closed = true));
  onTeardown(() => mux.destroy());
  return {
    request: (h) => wrap(mux.request({ ':method': 'POST', ':path': new URL(s.url).pathname, 'netchan-version': '1', ...headers, ...h })),
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

/** An honest client: a session whose values get through. */
async function honest(s: Started, transport: Transport, name = 'jobs'): Promise<Session> {
  const session = await s.client({ transport });
  const jobs = s.server.channel<number>(name, 1);
  await session.channel<number>(name).send(7);
  expect(await jobs.receive()).to.equal(7);
  return session;
}

describe('hardening: connections, sessions and principals', function () {
  this.timeout(20_000);
  afterEach(teardown);

  describe('stream ids', () => {
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

// used by later suites
void connect;
void rejection;
void tls;
void untilConnections;
void until;
