/**
 * The control stream against a peer that asks and never listens: PINGs whose PONGs it never
 * reads must not pile up in the server's memory (docs/PROTOCOL.md §4.1).
 */
import http2 from 'node:http2';
import { expect } from 'chai';
import { Channel, type ChannelLike } from '../lib/index.js';
import { FrameType, encodeFrame } from '../lib/wire/frames.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until } from './helpers/net.js';
import { watchLoop } from './helpers/watch.js';

describe('hardening: the control stream', function () {
  this.timeout(30_000);
  afterEach(teardown);

  it('regression: a flood of PINGs from a peer that reads no PONG does not grow the server without bound', async () => {
    const s = await startServer();
    const echo = s.server.channel<{ n: number; reply: ChannelLike<number> }>('echo', 8);
    void (async () => {
      for await (const { n, reply } of echo) await reply.send(n + 1);
    })();
    const loop = watchLoop(); // the loop keeps turning while the flood arrives

    const { caCert } = await testCertificates();
    const h2 = http2.connect(s.url, { ca: caCert });
    h2.on('error', () => undefined);
    onTeardown(() => void h2.destroy());
    const control = h2.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-kind': 'session', 'netchan-stream': 'c0' });
    control.on('error', () => undefined);
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => control.once('response', resolve));
    expect(headers[':status']).to.equal(200);
    control.pause(); // never reads: the server's PONGs fill the stream's window, then its buffer

    const before = s.server.stats().bytesOut;
    const ping = encodeFrame(FrameType.PING, Buffer.alloc(8, 7));
    const batch = Buffer.concat(Array.from({ length: 1000 }, () => ping)); // 13,000 bytes
    const rounds = 200; // 200,000 PINGs, 2.6 MB: as many PONG bytes if each were answered
    let received = 0;
    for (let i = 0; i < rounds; i++) {
      if (!control.write(batch)) await new Promise((r) => control.once('drain', r));
    }
    await until(() => {
      received = s.server.stats().bytesIn;
      return received >= rounds * batch.length;
    }, 20_000, 'the server to read every PING');
    const grew = s.server.stats().bytesOut - before;
    expect(grew, 'PONG bytes the server took on').to.be.below(512 * 1024);
    expect(s.server.stats().sessions, 'the flooding session lives (a PING is a sign of life)').to.be.at.least(1);

    // an honest client on the same server is served
    const session = await s.client();
    const remote = session.channel<{ n: number; reply: ChannelLike<number> }>('echo');
    for (let n = 0; n < 5; n++) {
      const reply = new Channel<number>();
      await remote.send({ n, reply });
      expect(await reply.receive()).to.equal(n + 1);
    }
    expect(loop.maxGapMs(), 'longest pause of the event loop, ms').to.be.below(1000);
  });
});

describe('hardening: what a server may ask of a client', () => {
  it('regression: a netchan-heartbeat-ms of 1, -5, Infinity, 1e12 or junk does not make the client ping every millisecond or never', async () => {
    const { serverHeartbeat } = await import('../lib/wire/headers.js');
    expect(serverHeartbeat('1')).to.equal(10);
    expect(serverHeartbeat('-5')).to.equal(15_000);
    expect(serverHeartbeat('Infinity')).to.equal(15_000);
    expect(serverHeartbeat('1e12')).to.equal(3_600_000);
    expect(serverHeartbeat('abc')).to.equal(15_000);
    expect(serverHeartbeat(undefined)).to.equal(15_000);
    expect(serverHeartbeat('15000')).to.equal(15_000);
    expect(serverHeartbeat('250')).to.equal(250);
  });
});
