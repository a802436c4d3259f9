/**
 * The in-memory transport (lib/transport/memory.ts, `connectInMemory`): a session with a server
 * in the same process, no listener and no socket, with the semantics of the network: references
 * inside values, the server's auth policy, a cut connection resumed with nothing lost, and
 * nothing left behind.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { expect } from 'chai';
import { Channel, connectInMemory, createServer, type ChannelLike, type NetchanServer, type Session } from '../lib/index.js';
import { rejection } from './helpers/assert.js';
import { onTeardown, teardown, until } from './helpers/net.js';

function serverInMemory(options: Parameters<typeof createServer>[0] = {}): NetchanServer {
  const server = createServer(options);
  onTeardown(() => server.close());
  return server;
}

async function sessionTo(server: NetchanServer, options: Parameters<typeof connectInMemory>[1] = {}): Promise<ReturnType<typeof connectInMemory>> {
  const opened = await connectInMemory(server, options);
  onTeardown(() => opened.session.close());
  return opened;
}

describe('the in-memory transport', function () {
  this.timeout(30_000);
  afterEach(teardown);

  it('carries a request with a reply channel and a byte stream to a server that never listens', async () => {
    const server = serverInMemory();
    const requests = server.channel<{ upload: Readable; reply: ChannelLike<string> }>('digest', 4);
    void (async () => {
      for await (const { upload, reply } of requests) {
        const hash = createHash('sha256');
        for await (const chunk of upload) hash.update(chunk as Buffer);
        await reply.send(hash.digest('hex'));
      }
    })();
    const { session } = await sessionTo(server);
    expect(session.transport).to.equal('memory');
    expect(server.listener).to.equal(null);
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const reply = new Channel<string>();
    await session.channel<{ upload: Readable; reply: ChannelLike<string> }>('digest').send({ upload: Readable.from([data.subarray(0, 1 << 20), data.subarray(1 << 20)]), reply });
    expect(await reply.receive()).to.equal(createHash('sha256').update(data).digest('hex'));
  });

  it("the principal it is given is the one the server's policy sees", async () => {
    const server = serverInMemory({ authorize: ({ principal, channel }) => channel !== 'payroll' || principal === 'alice' });
    const payroll = server.channel<number>('payroll', 1);
    const alice = (await sessionTo(server, { principal: 'alice' })).session;
    const bob = (await sessionTo(server, { principal: 'bob' })).session;
    const err = await rejection(bob.channel<number>('payroll').send(1));
    expect(err.code).to.equal('ERR_UNAUTHORIZED');
    await alice.channel<number>('payroll').send(2);
    expect(await payroll.receive()).to.equal(2);
  });

  it('a cut connection is resumed: every value arrives once, in order, and the session says so', async () => {
    const server = serverInMemory({ sessionLeaseMs: 5000 });
    const jobs = server.channel<number>('jobs', 16);
    const { session, cut } = await sessionTo(server);
    const events: string[] = [];
    session.on('disconnect', (e) => events.push(`disconnect ${e.code}`));
    session.on('reconnect', () => events.push('reconnect'));
    const remote = session.channel<number>('jobs');
    const got: number[] = [];
    const receiving = (async () => {
      while (got.length < 300) got.push(await jobs.receive());
    })();
    for (let i = 0; i < 300; i++) {
      if (i === 100 || i === 200) cut();
      await remote.send(i);
    }
    await receiving;
    expect(got).to.deep.equal(Array.from({ length: 300 }, (_, i) => i));
    expect(events).to.deep.equal(['disconnect ERR_CONNECTION_LOST', 'reconnect', 'disconnect ERR_CONNECTION_LOST', 'reconnect']);
    expect(session.closed).to.equal(false);
  });

  it('regression: streams held back while the pipe is congested go on once it drains (eight 1 MiB byte streams in one value)', async () => {
    const server = serverInMemory();
    const uploads = server.channel<{ parts: Readable[]; reply: ChannelLike<number[]> }>('uploads', 1);
    void (async () => {
      for await (const { parts, reply } of uploads) {
        const sizes = await Promise.all(
          parts.map(async (part) => {
            let n = 0;
            for await (const chunk of part) n += (chunk as Buffer).length;
            return n;
          }),
        );
        await reply.send(sizes);
      }
    })();
    const { session } = await sessionTo(server);
    const reply = new Channel<number[]>();
    const parts = Array.from({ length: 8 }, () => Readable.from([randomBytes(1 << 20)]));
    await session.channel<{ parts: Readable[]; reply: ChannelLike<number[]> }>('uploads').send({ parts, reply });
    expect(await reply.receive()).to.deep.equal(Array(8).fill(1 << 20));
  });

  it('without a lease, a cut ends the session and its pending operations fail with ERR_CONNECTION_LOST', async () => {
    const server = serverInMemory({ sessionLeaseMs: 0 });
    server.channel<number>('quiet', 0);
    const { session, cut } = await sessionTo(server);
    const closed = new Promise<string>((resolve) => session.once('close', (e) => resolve(e.code)));
    const pending = session.channel<number>('quiet').receive();
    await new Promise((r) => setTimeout(r, 20));
    cut();
    expect((await rejection(pending)).code).to.equal('ERR_CONNECTION_LOST');
    expect(await closed).to.equal('ERR_CONNECTION_LOST');
    await until(() => server.stats().sessions === 0, 5000, 'the server session to end');
  });

  it('400 channels opened and closed, then the session closed, leave no stream, channel or session behind', async () => {
    const server = serverInMemory();
    const jobs = server.channel<number>('jobs', 8);
    const sessions: Session[] = [];
    for (let s = 0; s < 2; s++) sessions.push((await sessionTo(server)).session);
    for (let i = 0; i < 400; i++) {
      const session = sessions[i % 2] as Session;
      const h = session.channel<number>('jobs');
      await h.send(i);
      expect(await jobs.receive()).to.equal(i);
      h.release();
    }
    await until(() => server.stats().streams === 2 && server.stats().channels === 0, 5000, 'only the control streams left');
    for (const s of sessions) expect(s.stats()).to.include({ streams: 1, channels: 0, byteStreams: 0 });
    await Promise.all(sessions.map((s) => s.close()));
    await until(() => server.stats().sessions === 0 && server.stats().streams === 0, 5000, 'every session gone');
  });
});
