/**
 * Limits with their defaults (docs/PROTOCOL.md §4.3), the server's policy, and mTLS: each
 * exceeded limit is a clear error to the offending side only. Run over HTTP/2 and the WebSocket
 * fallback.
 */
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { DEFAULT_LIMITS, DEFAULT_TIMEOUTS, connect, createServer } from '../lib/index.js';
import { rejection } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { startServer, teardown, until, useTransport } from './helpers/net.js';

describe('limits', function () {
  this.timeout(20_000);
  afterEach(teardown);

  it('have documented defaults', () => {
    expect(DEFAULT_LIMITS).to.deep.equal({
      maxChannelsPerSession: 4096,
      maxByteStreamsPerSession: 1024,
      maxSessionsPerPrincipal: 256,
      maxAnonymousSessions: 16384,
      maxUnusedAnonymousSessionsPerConnection: 64,
    });
    expect(createServer({}).limits).to.deep.equal(DEFAULT_LIMITS);
    expect(DEFAULT_TIMEOUTS).to.deep.equal({ handshakeTimeoutMs: 10_000, firstRequestTimeoutMs: 10_000, noSessionTimeoutMs: 30_000, unusedAnonymousSessionTimeoutMs: 60_000 });
    expect(createServer({}).timeouts).to.deep.equal(DEFAULT_TIMEOUTS);
  });

  for (const transport of ['h2', 'ws', 'memory'] as const) {
    describe(`over ${transport}`, () => {
      before(() => useTransport(transport));
      after(() => useTransport('h2'));

      it('channel streams per session: the one over the limit fails with ERR_LIMIT; others and other sessions work', async () => {
        const { server, client } = await startServer({ maxChannelsPerSession: 3 });
        const jobs = server.channel<number>('jobs', 16);
        const session = await client();
        const handles = [0, 1, 2].map(() => session.channel<number>('jobs'));
        for (const [i, h] of handles.entries()) await h.send(i);
        const over = session.channel<number>('jobs');
        const err = await rejection(over.send(99));
        expect(err.code).to.equal('ERR_LIMIT');
        expect(err.message).to.match(/3 channel streams/);
        // the session and its other channels are unharmed
        await handles[0]!.send(3);
        const other = await client();
        await other.channel<number>('jobs').send(4);
        const got: number[] = [];
        for (let i = 0; i < 5; i++) got.push(await jobs.receive());
        expect(got.sort()).to.deep.equal([0, 1, 2, 3, 4]);
        // a released handle frees its place
        handles[1]!.release();
        await until(() => server.stats().channels === 3 + 1 - 1, 3000, 'released stream gone');
        await session.channel<number>('jobs').send(5);
        expect(await jobs.receive()).to.equal(5);
      });

      it('byte streams per session: a value naming one over the limit fails with ERR_LIMIT', async () => {
        const { server, client } = await startServer({ maxByteStreamsPerSession: 1 });
        const uploads = server.channel<NodeJS.ReadableStream>('uploads', 0);
        const session = await client();
        const first = new PassThrough();
        const handle = session.channel<NodeJS.ReadableStream>('uploads');
        const took = uploads.receive();
        await handle.send(first); // held open: the one byte stream this session may have
        await took;
        const second = session.channel<NodeJS.ReadableStream>('uploads');
        const pending = second.send(new PassThrough());
        void uploads.receive().catch(() => undefined);
        const err = await rejection(pending);
        expect(err.code).to.equal('ERR_LIMIT');
        expect(err.message).to.match(/byte streams/);
        // the first byte stream still flows, and the session still works
        first.end('still here');
        expect(server.stats().sessions).to.equal(1);
      });

      it('idle timeout: the server ends a session whose control stream falls silent; others live on', async () => {
        const { server, client } = await startServer({ idleTimeoutMs: 300, heartbeatIntervalMs: 100 });
        const quiet = await client({ heartbeatIntervalMs: 60_000, idleTimeoutMs: 60_000 });
        const lively = await client();
        await until(() => quiet.closed, 5000, 'the silent session ended');
        expect(lively.closed).to.equal(false);
        expect(server.stats().sessions).to.equal(1);
        expect(() => quiet.channel<number>('x')).to.throw().with.property('code', 'ERR_SESSION_CLOSED');
      });

      it('frame size: a value over the server limit fails with ERR_VALUE_TOO_LARGE before anything is sent', async () => {
        const { server, client } = await startServer({ maxFrameBytes: 1024 });
        const jobs = server.channel<Uint8Array>('jobs', 4);
        const session = await client();
        const h = session.channel<Uint8Array>('jobs');
        const err = await rejection(h.send(new Uint8Array(2048)));
        expect(err.code).to.equal('ERR_VALUE_TOO_LARGE');
        expect(err.mayHaveBeenDelivered).to.equal(false);
        await h.send(new Uint8Array(512));
        expect((await jobs.receive()).length).to.equal(512);
      });

      it("the server's policy refuses a channel to a principal (403 ERR_UNAUTHORIZED) and nothing else", async () => {
        const certs = await testCertificates();
        const { server, client } = await startServer({
          ca: certs.caCert,
          requestCert: true,
          authorize: ({ principal, channel }) => channel !== 'admin' || principal === 'cert:root',
        });
        const jobs = server.channel<number>('jobs', 4);
        server.channel<number>('admin', 4);
        // mTLS: the client certificate names the principal
        const session = await client({ cert: certs.clientCert, key: certs.clientKey });
        const err = await rejection(session.channel<number>('admin').send(1));
        expect(err.code).to.equal('ERR_UNAUTHORIZED');
        await session.channel<number>('jobs').send(2);
        expect(await jobs.receive()).to.equal(2);
        expect(server.stats().sessions).to.equal(1);
      });
    });
  }

  it('mTLS: the client certificate is the principal; a client without one is refused with ERR_TLS', async () => {
    const certs = await testCertificates();
    const seen: string[] = [];
    const { server, client, url } = await startServer({
      ca: certs.caCert,
      requestCert: true,
      authorize: ({ principal }) => {
        seen.push(principal);
        return true;
      },
    });
    const jobs = server.channel<number>('jobs', 4);
    const session = await client({ cert: certs.clientCert, key: certs.clientKey });
    await session.channel<number>('jobs').send(1);
    expect(await jobs.receive()).to.equal(1);
    expect(seen).to.deep.equal(['cert:test-client']);
    const err = await rejection(connect(url, { ca: certs.caCert }));
    expect(err.code).to.equal('ERR_TLS');
  });
});
