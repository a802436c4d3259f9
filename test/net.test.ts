import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable, Writable, type Duplex } from 'node:stream';
import { expect } from 'chai';
import { Channel, NetchanError, type ChannelLike } from '../lib/index.js';
import { startServer, teardown, until, tick, useTransport } from './helpers/net.js';
import { rejection, track } from './helpers/assert.js';
import { digestOf } from './helpers/streams.js';

function bigSource(totalBytes: number): { stream: Readable; digest: Promise<string> } {
  const hash = createHash('sha256');
  let left = totalBytes;
  let resolveDigest!: (d: string) => void;
  const digest = new Promise<string>((r) => (resolveDigest = r));
  const stream = new Readable({
    read() {
      if (left === 0) {
        resolveDigest(hash.digest('hex'));
        this.push(null);
        return;
      }
      const chunk = randomBytes(Math.min(left, 256 * 1024));
      left -= chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, digest };
}

const UPLOAD_BYTES = Number(process.env.UPLOAD_BYTES ?? 32 * 1024 * 1024);

for (const transport of ['h2', 'ws', 'memory'] as const) describe(`channels over ${{ h2: 'HTTP/2', ws: 'the WebSocket fallback', memory: 'the in-memory transport' }[transport]}`, function () {
  this.timeout(30_000);
  before(() => useTransport(transport));
  after(() => useTransport('h2'));
  afterEach(teardown);

  it('capacity 0 is a rendezvous across the wire', async () => {
    const { server, client } = await startServer();
    const jobs = server.channel<number>('jobs', 0);
    const session = await client();
    const remote = session.channel<number>('jobs');
    const sent = track(remote.send(42));
    await tick(100);
    expect(sent.done, 'send resolved before any receiver took the value').to.equal(false);
    expect(await jobs.receive()).to.equal(42);
    await until(() => sent.done, 5000, 'send to resolve');
    expect(sent.error).to.equal(undefined);
  });

  it('a remote receive from a capacity-0 channel completes the local send only when it takes the value', async () => {
    const { server, client } = await startServer();
    const ch = server.channel<string>('out', 0);
    const session = await client();
    const remote = session.channel<string>('out');
    const sent = track(ch.send('hello'));
    await tick(100);
    expect(sent.done).to.equal(false);
    expect(await remote.receive()).to.equal('hello');
    await until(() => sent.done);
    expect(sent.error).to.equal(undefined);
  });

  it('request/reply with a reply channel inside the value', async () => {
    const { server, client } = await startServer();
    const requests = server.channel<{ n: number; reply: ChannelLike<number> }>('square', 8);
    (async () => {
      for await (const { n, reply } of requests) {
        await reply.send(n * n);
        reply.close();
      }
    })().catch(() => undefined);
    const session = await client();
    const remote = session.channel<{ n: number; reply: ChannelLike<number> }>('square');
    for (const n of [3, 7, 12]) {
      const reply = new Channel<number>();
      await remote.send({ n, reply });
      expect(await reply.receive()).to.equal(n * n);
      await until(() => reply.closed, 5000, 'reply channel close to propagate');
    }
  });

  it('round-trips Date, BigInt, binary, Map, Set and nested structures', async () => {
    const { server, client } = await startServer();
    const echo = server.channel<unknown>('echo', 4);
    const session = await client();
    const remote = session.channel<unknown>('echo');
    const value = {
      when: new Date('2026-11-22T10:20:30.456Z'),
      big: 12345678901234567890123456789n,
      neg: -(2n ** 70n),
      bytes: new Uint8Array([0, 1, 2, 250, 255]),
      map: new Map<unknown, unknown>([['a', 1], [2, new Set(['x', 'y'])]]),
      set: new Set([1, 'two', 3n]),
      nested: { list: [1, 'a', null, true, 1.5, { deep: [new Date(0)] }] },
    };
    await remote.send(value);
    const got = (await echo.receive()) as typeof value;
    expect(got.when).to.be.instanceOf(Date);
    expect(got.when.toISOString()).to.equal(value.when.toISOString());
    expect(got.big).to.equal(value.big);
    expect(got.neg).to.equal(value.neg);
    expect(Array.from(got.bytes)).to.deep.equal([0, 1, 2, 250, 255]);
    expect(got.map).to.be.instanceOf(Map);
    expect(got.map.get('a')).to.equal(1);
    expect([...(got.map.get(2) as Set<string>)]).to.deep.equal(['x', 'y']);
    expect([...got.set]).to.deep.equal([1, 'two', 3n]);
    expect((got.nested.list[5] as { deep: Date[] }).deep[0]!.getTime()).to.equal(0);
    // and back the other way
    await echo.send(got);
    const back = (await remote.receive()) as typeof value;
    expect(back.big).to.equal(value.big);
    expect(back.map.get('a')).to.equal(1);
  });

  it('carries 100k values in order into a buffered channel', async () => {
    const { server, client } = await startServer();
    const inbox = server.channel<number>('inbox', 1024);
    const session = await client();
    const remote = session.channel<number>('inbox');
    const N = 100_000;
    const consumer = (async () => {
      let expected = 0;
      for (let i = 0; i < N; i++) {
        const v = await inbox.receive();
        if (v !== expected) throw new Error(`out of order: got ${v}, expected ${expected}`);
        expected++;
      }
      return expected;
    })();
    for (let i = 0; i < N; i++) await remote.send(i);
    expect(await consumer).to.equal(N);
    expect(session.stats().valuesOut).to.be.at.least(N);
  });

  it('two clients sharing a server channel receive each value exactly once', async () => {
    const { server, client } = await startServer();
    const work = server.channel<number>('work', 16);
    const a = (await client()).channel<number>('work');
    const b = (await client()).channel<number>('work');
    const N = 5000;
    const seen: number[] = [];
    const counts = [0, 0];
    const drain = (h: ChannelLike<number>, k: number) =>
      (async () => {
        for await (const v of h) {
          seen.push(v);
          counts[k]!++;
        }
      })();
    const da = drain(a, 0);
    const db = drain(b, 1);
    for (let i = 0; i < N; i++) await work.send(i);
    work.close();
    await Promise.all([da, db]);
    expect(seen.length).to.equal(N);
    expect(new Set(seen).size).to.equal(N);
    expect(counts[0]).to.be.greaterThan(0);
    expect(counts[1]).to.be.greaterThan(0);
  });

  it('many senders merge into one server channel (fan-in)', async () => {
    const { server, client } = await startServer();
    const merged = server.channel<string>('merged', 64);
    const sessions = await Promise.all([client(), client(), client()]);
    const sending = Promise.all(
      sessions.map(async (s, k) => {
        const h = s.channel<string>('merged');
        for (let i = 0; i < 200; i++) await h.send(`${k}:${i}`);
      }),
    );
    const got: string[] = [];
    while (got.length < 600) got.push(await merged.receive());
    await sending;
    for (let k = 0; k < 3; k++) {
      const mine = got.filter((v) => v.startsWith(`${k}:`)).map((v) => Number(v.split(':')[1]));
      expect(mine).to.deep.equal(Array.from({ length: 200 }, (_, i) => i));
    }
  });

  it('moves a 32 MiB byte stream client → server with a matching digest', async () => {
    const { server, client } = await startServer();
    const uploads = server.channel<{ name: string; data: Readable }>('uploads', 1);
    const session = await client();
    const { stream, digest } = bigSource(UPLOAD_BYTES);
    await session.channel<{ name: string; data: Readable }>('uploads').send({ name: 'blob', data: stream });
    const { name, data } = await uploads.receive();
    expect(name).to.equal('blob');
    const got = await digestOf(data);
    expect(got.bytes).to.equal(UPLOAD_BYTES);
    expect(got.hex).to.equal(await digest);
  });

  it('moves a 32 MiB byte stream server → client with a matching digest', async () => {
    const { server, client } = await startServer();
    const downloads = server.channel<Readable>('downloads', 1);
    const session = await client();
    const remote = session.channel<Readable>('downloads');
    const { stream, digest } = bigSource(32 * 1024 * 1024);
    await downloads.send(stream);
    const data = await remote.receive();
    const got = await digestOf(data);
    expect(got.bytes).to.equal(32 * 1024 * 1024);
    expect(got.hex).to.equal(await digest);
  });

  it('regression: a short client upload read only later is not dumped by the server', async () => {
    // Node's HTTP/2 server drops a stream's unread body once both sides have ended; a small upload
    // is complete before its value is decoded, so the server must mark the body as being read.
    const { server, client } = await startServer();
    const uploads = server.channel<{ data: Readable }>('small-uploads', 1);
    const session = await client();
    const payload = randomBytes(100_000);
    await session.channel<{ data: Readable }>('small-uploads').send({ data: Readable.from([payload]) });
    const { data } = await uploads.receive();
    await tick(100); // both sides of the byte stream have ended by now
    const chunks: Buffer[] = [];
    await new Promise<void>((resolve, reject) => {
      data.on('data', (c: Buffer) => chunks.push(c));
      data.once('end', resolve);
      data.once('error', reject);
    });
    expect(Buffer.concat(chunks).equals(payload)).to.equal(true);
  });

  it('a client Writable inside a value receives what the server writes', async () => {
    const { server, client } = await startServer();
    const sinks = server.channel<Writable>('sinks', 1);
    const session = await client();
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        cb();
      },
    });
    const finished = new Promise((r) => sink.on('finish', r));
    await session.channel<Writable>('sinks').send(sink);
    const w = await sinks.receive();
    w.write('hello ');
    w.end('world');
    await finished;
    expect(Buffer.concat(chunks).toString()).to.equal('hello world');
  });

  it('a Duplex inside a value carries bytes both ways, with half-close', async () => {
    const { server, client } = await startServer();
    const pipes = server.channel<Duplex>('pipes', 1);
    const session = await client();
    // the client's duplex: what the server writes comes out of `fromServer`; what we write to `toServer` goes to the server
    const toServer = new PassThrough();
    const fromServer = new PassThrough();
    const { Duplex: D } = await import('node:stream');
    const local = D.from({ readable: toServer, writable: fromServer });
    await session.channel<Duplex>('pipes').send(local);
    const remote = await pipes.receive();
    toServer.end('ping');
    const gotAtServer = await digestOf(remote).then(() => 'ended');
    expect(gotAtServer).to.equal('ended');
    remote.end('pong');
    const chunks: Buffer[] = [];
    for await (const c of fromServer) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).to.equal('pong');
  });

  /**
   * Reads a stream to its end with for-await (as pipeline does, it also reports a stream that
   * failed before anyone read it): 'end' with the byte count, or 'error' with the error.
   */
  async function outcomeOf(stream: NodeJS.ReadableStream, progress = { bytes: 0 }): Promise<{ how: 'end' | 'error'; bytes: number; error?: Error }> {
    try {
      for await (const c of stream as AsyncIterable<Buffer>) progress.bytes += c.length;
      return { how: 'end', bytes: progress.bytes };
    } catch (error) {
      return { how: 'error', bytes: progress.bytes, error: error as Error };
    }
  }

  /**
   * How a reader learns that its byte stream was cut off: netchan's codes, or (over HTTP/2, when
   * Node destroys the stream without an error) Node's own premature close. Never a clean end.
   */
  const CUT_OFF = ['ERR_STREAM_RESET', 'ERR_CONNECTION_LOST', 'ERR_STREAM_PREMATURE_CLOSE'];

  /**
   * Writes 100,000 bytes into `source` and nothing more (idle, not ended), waits until `data`, its
   * other end, has them all, calls `cut`, and expects `data` to fail as cut off, not to end.
   */
  async function expectCutOff(source: PassThrough, data: Readable, cut: () => Promise<void>): Promise<void> {
    source.write(randomBytes(100_000));
    const progress = { bytes: 0 };
    const outcome = outcomeOf(data, progress);
    await until(() => progress.bytes === 100_000);
    await cut();
    const { how, bytes, error } = await outcome;
    expect(how).to.equal('error');
    expect((error as NetchanError).code).to.be.oneOf(CUT_OFF);
    expect(bytes).to.equal(100_000);
  }

  /** A source that gives 1 MiB and then fails: the receiver must not see a clean (truncated) end. */
  function failingSource(): Readable {
    let sent = 0;
    return new Readable({
      read() {
        if (sent < 1024 * 1024) {
          sent += 64 * 1024;
          this.push(randomBytes(64 * 1024));
        } else this.destroy(new Error('disk on fire'));
      },
    });
  }

  it('a byte stream whose source fails mid-way errors at the receiver instead of ending (client → server)', async () => {
    const { server, client } = await startServer();
    const uploads = server.channel<{ data: Readable }>('failing-uploads', 1);
    const bystander = server.channel<number>('bystander', 1);
    const session = await client();
    await session.channel<{ data: Readable }>('failing-uploads').send({ data: failingSource() });
    const { data } = await uploads.receive();
    const outcome = await outcomeOf(data);
    expect(outcome.how).to.equal('error');
    expect(outcome.bytes).to.be.at.most(1024 * 1024);
    expect((outcome.error as NetchanError).code).to.be.oneOf(CUT_OFF);
    // the session and its other channels are unharmed
    await session.channel<number>('bystander').send(7);
    expect(await bystander.receive()).to.equal(7);
  });

  it('a byte stream whose source fails mid-way errors at the receiver instead of ending (server → client)', async () => {
    const { server, client } = await startServer();
    const downloads = server.channel<Readable>('failing-downloads', 1);
    const session = await client();
    const remote = session.channel<Readable>('failing-downloads');
    await downloads.send(failingSource());
    const data = await remote.receive();
    const outcome = await outcomeOf(data);
    expect(outcome.how).to.equal('error');
    expect(outcome.bytes).to.be.at.most(1024 * 1024);
    expect((outcome.error as NetchanError).code).to.be.oneOf(CUT_OFF);
    const echo = server.channel<string>('after-failure', 1);
    await session.channel<string>('after-failure').send('still here');
    expect(await echo.receive()).to.equal('still here');
  });

  it('a byte stream cut off by its session ending errors at the receiver instead of ending cleanly', async () => {
    const { server, client } = await startServer();
    const downloads = server.channel<Readable>('open-downloads', 1);
    const session = await client();
    const remote = session.channel<Readable>('open-downloads');
    const source = new PassThrough();
    await downloads.send(source);
    const data = await remote.receive();
    await expectCutOff(source, data, () => server.close()); // ends every session at once: its streams are reset
  });

  it('a byte stream cut off by a graceful session.close errors at the receiver instead of ending cleanly', async () => {
    const { server, client } = await startServer();
    const uploads = server.channel<Readable>('open-uploads', 1);
    const session = await client();
    const source = new PassThrough();
    await session.channel<Readable>('open-uploads').send(source);
    const data = await uploads.receive();
    await expectCutOff(source, data, () => session.close());
  });

  it('a channel from a second copy of the module fails that send with ERR_ENCODE (not delivered); the channel lives on', async () => {
    const { server, client } = await startServer();
    const requests = server.channel<{ reply?: unknown; n: number }>('foreign-requests', 1);
    const session = await client();
    const remote = session.channel<{ reply?: unknown; n: number }>('foreign-requests');
    const copy = (await import(`../lib/core/channel.js?copy=${Date.now()}`)) as typeof import('../lib/core/channel.js');
    const err = await rejection(remote.send({ reply: new copy.Channel<number>(1), n: 1 }));
    expect(err.code).to.equal('ERR_ENCODE');
    expect(err.mayHaveBeenDelivered).to.equal(false);
    await remote.send({ n: 2 });
    expect((await requests.receive()).n).to.equal(2);
    expect(requests.length).to.equal(0);
  });

  it('a stalled channel does not stall a busy one on the same connection', async () => {
    const { server, client } = await startServer();
    const stalledOwner = server.channel<Uint8Array>('stalled', 2); // nobody ever reads it
    const busy = server.channel<number>('busy', 16);
    const session = await client();
    const stalled = session.channel<Uint8Array>('stalled');
    const blob = new Uint8Array(256 * 1024);
    const stalledSends = Array.from({ length: 6 }, () => stalled.send(blob));
    const state = stalledSends.map(track);
    const remote = session.channel<number>('busy');
    const consumer = (async () => {
      let sum = 0;
      for (let i = 0; i < 10_000; i++) sum += await busy.receive();
      return sum;
    })();
    for (let i = 0; i < 10_000; i++) await remote.send(i);
    expect(await consumer).to.equal((10_000 * 9_999) / 2);
    // Two fill the channel; the handle's two credits came back as they entered it, so two more
    // resolved and wait at the owner, in order, for room (docs/PROTOCOL.md §5.2). The last two
    // have no credit: they wait, and hold up nothing else on the connection.
    expect(stalledOwner.length).to.equal(2);
    expect(state.map((s) => s.done)).to.deep.equal([true, true, true, true, false, false]);
    const got = [await stalledOwner.receive(), await stalledOwner.receive(), await stalledOwner.receive()];
    expect(got.every((b) => b.length === blob.length)).to.equal(true);
    await until(() => state.every((s) => s.done), 5000, 'the waiting sends to get credit');
  });

  it('close propagates from the owner: remote for-await ends after the last value', async () => {
    const { server, client } = await startServer();
    const feed = server.channel<number>('feed', 10);
    const session = await client();
    const remote = session.channel<number>('feed');
    for (let i = 0; i < 5; i++) await feed.send(i);
    feed.close();
    const got: number[] = [];
    for await (const v of remote) got.push(v);
    expect(got).to.deep.equal([0, 1, 2, 3, 4]);
    expect(remote.closed).to.equal(true);
    expect((await rejection(remote.send(9))).code).to.equal('ERR_CHANNEL_CLOSED');
  });

  it('regression: values prefetched when the owner closes are delivered once, not put back', async () => {
    const { server, client } = await startServer();
    const feed = server.channel<number>('feed-once', 10);
    const session = await client();
    const remote = session.channel<number>('feed-once');
    for (let i = 0; i < 5; i++) await feed.send(i);
    remote.tryReceive(); // starts the prefetch window
    await until(() => feed.length === 0, 5000, 'the handle to prefetch');
    feed.close();
    await tick(50); // the owner has ended its side; the handle still holds the values
    const got: number[] = [];
    for await (const v of remote) got.push(v);
    expect(got).to.deep.equal([0, 1, 2, 3, 4]);
    await until(() => server.stats().channels === 0, 5000, 'the stream to finish');
    expect(feed.length, 'values put back into the closed channel').to.equal(0);
  });

  it('close with an error propagates it to remote receivers', async () => {
    const { server, client } = await startServer();
    const feed = server.channel<number>('feed', 10);
    const session = await client();
    const remote = session.channel<number>('feed');
    const err = Object.assign(new Error('upstream failed'), { code: 'E_UPSTREAM' });
    await feed.send(1);
    feed.close(err);
    const got: number[] = [];
    let caught: unknown;
    try {
      for await (const v of remote) got.push(v);
    } catch (e) {
      caught = e;
    }
    expect(got).to.deep.equal([1]);
    expect(caught).to.be.instanceOf(Error);
    expect((caught as Error).message).to.equal('upstream failed');
    expect((caught as Error & { code: string }).code).to.equal('E_UPSTREAM');
  });

  it('a remote for await waiting on an empty channel ends when the owner closes it, or throws the close error', async () => {
    const { server, client } = await startServer();
    const plain = server.channel<number>('wait-plain', 4);
    const failing = server.channel<number>('wait-failing', 0);
    const session = await client();
    const collect = async (ch: ChannelLike<number>) => {
      const got: number[] = [];
      try {
        for await (const v of ch) got.push(v);
      } catch (err) {
        return { got, err: err as Error & { code?: string } };
      }
      return { got, err: undefined };
    };
    const a = collect(session.channel<number>('wait-plain'));
    const b = collect(session.channel<number>('wait-failing'));
    await plain.send(1);
    await failing.send(2); // capacity 0: resolves once the remote step took it
    await tick(50); // both steps wait again
    plain.close();
    failing.close(Object.assign(new Error('upstream failed'), { code: 'E_UPSTREAM' }));
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra).to.deep.equal({ got: [1], err: undefined });
    expect(rb.got).to.deep.equal([2]);
    expect(rb.err?.message).to.equal('upstream failed');
    expect(rb.err?.code).to.equal('E_UPSTREAM');
  });

  it('close propagates from the remote handle to the owner', async () => {
    const { server, client } = await startServer();
    const ch = server.channel<number>('c', 4);
    const session = await client();
    const remote = session.channel<number>('c');
    await remote.send(1);
    remote.close(new Error('done here'));
    await until(() => ch.closed, 5000, 'owner channel to close');
    expect(ch.closeReason?.message).to.equal('done here');
    expect(await ch.receive()).to.equal(1);
    const err = await rejection(ch.receive());
    expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
  });

  it('an unknown channel name is an error on that channel only', async () => {
    const { server, client } = await startServer();
    const ok = server.channel<number>('ok', 1);
    const session = await client();
    const bad = session.channel<number>('nope');
    const err = await rejection(bad.receive());
    expect(err.code).to.equal('ERR_UNKNOWN_CHANNEL');
    const sendErr = await rejection(bad.send(1));
    expect(sendErr.code).to.equal('ERR_UNKNOWN_CHANNEL');
    await session.channel<number>('ok').send(5);
    expect(await ok.receive()).to.equal(5);
    expect(session.closed).to.equal(false);
  });

  it('a server-owned channel sent to the client becomes a handle the client can use', async () => {
    const { server, client } = await startServer();
    const lobby = server.channel<ChannelLike<string>>('lobby', 1);
    const room = new Channel<string>(4);
    await lobby.send(room);
    const session = await client();
    const handle = await session.channel<ChannelLike<string>>('lobby').receive();
    await handle.send('hi from client');
    expect(await room.receive()).to.equal('hi from client');
    await room.send('hi from server');
    expect(await handle.receive()).to.equal('hi from server');
  });

  it('a handle sent back to its owner arrives as the original channel', async () => {
    const { server, client } = await startServer();
    const jobs = server.channel<unknown>('jobs', 1);
    const registry = server.channel<unknown>('registry', 1);
    const session = await client();
    const handle = session.channel<unknown>('jobs');
    await session.channel<unknown>('registry').send({ ch: handle });
    const got = (await registry.receive()) as { ch: unknown };
    expect(got.ch).to.equal(jobs);
  });

  it('values a third party prefetched through a forwarding server go back to the owner when both handles let go, not lost', async () => {
    const { server, client } = await startServer();
    const meet = server.channel<ChannelLike<string>>('meet', 1);
    const alice = await client();
    const bob = await client();
    const alices = new Channel<string>(8);
    await alice.channel<ChannelLike<string>>('meet').send(alices);
    const relay = (await meet.receive()) as ChannelLike<string> & { release(): void };
    await server.channel<ChannelLike<string>>('handoff', 1).send(relay);
    const bobs = (await bob.channel<ChannelLike<string>>('handoff').receive()) as ChannelLike<string> & { release(): void };
    for (const v of ['a', 'b', 'c', 'd']) await alices.send(v);
    expect(await bobs.receive()).to.equal('a');
    await until(() => bobs.length === 3, 5000, 'bob to prefetch the rest');
    bobs.release();
    // the forwarder acknowledges to alice only what bob's program took: b, c and d are the
    // server handle's again, and alice's once it lets go
    await tick(200);
    relay.release();
    await until(() => alices.length === 3, 5000, 'the values bob never took back in alice\'s channel');
    const back: string[] = [];
    for (let r = alices.tryReceive(); r.ok; r = alices.tryReceive()) back.push(r.value);
    expect(back).to.deep.equal(['b', 'c', 'd']);
  });

  it('a client channel forwarded by the server reaches a third party', async () => {
    const { server, client } = await startServer();
    const meet = server.channel<ChannelLike<string>>('meet', 1);
    const alice = await client();
    const bob = await client();
    const aliceInbox = new Channel<string>(1);
    await alice.channel<ChannelLike<string>>('meet').send(aliceInbox);
    // the server hands alice's channel on to bob, unchanged
    const relay = await meet.receive();
    const bobSide = bob.channel<ChannelLike<string>>('handoff');
    server.channel<ChannelLike<string>>('handoff', 1).send(relay).catch(() => undefined);
    const toAlice = await bobSide.receive();
    await toAlice.send('hello alice');
    expect(await aliceInbox.receive()).to.equal('hello alice');
  });

  it('opening and closing thousands of reply channels returns stats to the baseline', async () => {
    const { server, client } = await startServer();
    const requests = server.channel<{ n: number; reply: ChannelLike<number> }>('rpc', 64);
    (async () => {
      for await (const { n, reply } of requests) {
        await reply.send(n + 1);
      }
    })().catch(() => undefined);
    const session = await client();
    const remote = session.channel<{ n: number; reply: ChannelLike<number> }>('rpc');
    // warm up with a reply channel that is closed too: a dropped one is released later, when
    // collected, which would move the baseline
    const first = new Channel<number>(1);
    await remote.send({ n: 0, reply: first });
    expect(await first.receive()).to.equal(1);
    first.close();
    await until(() => server.stats().channels === 1 && session.stats().channels === 1, 5000, 'warm-up reply channel gone');
    const baseServer = server.stats();
    const baseClient = session.stats();
    const N = 2000;
    const inParallel = 50;
    for (let i = 0; i < N; i += inParallel) {
      await Promise.all(
        Array.from({ length: inParallel }, async (_, k) => {
          const reply = new Channel<number>(1);
          await remote.send({ n: i + k, reply });
          expect(await reply.receive()).to.equal(i + k + 1);
          reply.close();
        }),
      );
    }
    await until(
      () => server.stats().streams === baseServer.streams && session.stats().streams === baseClient.streams,
      10_000,
      'streams to return to baseline',
    );
    const s = server.stats();
    const c = session.stats();
    expect(s.channels).to.equal(baseServer.channels);
    expect(c.channels).to.equal(baseClient.channels);
    expect(s.streams).to.equal(baseServer.streams);
    expect(c.streams).to.equal(baseClient.streams);
    expect(s.pendingReferences).to.equal(0);
    expect(s.valuesIn).to.be.at.least(N);
  });

  it('session.close rejects pending remote operations and releases every stream', async () => {
    const { server, client } = await startServer();
    server.channel<number>('quiet', 0);
    const session = await client();
    const remote = session.channel<number>('quiet');
    const pending = remote.receive();
    await tick(50);
    expect(server.stats().streams).to.be.greaterThan(0);
    await session.close();
    const err = await rejection(pending);
    expect(['ERR_SESSION_CLOSED', 'ERR_CONNECTION_LOST']).to.include(err.code);
    await until(() => server.stats().streams === 0 && server.stats().sessions === 0, 5000, 'server to release the session');
  });

  it('values a client prefetched but never received go back to the channel when it leaves', async () => {
    const { server, client } = await startServer();
    const work = server.channel<number>('work', 8);
    for (let i = 0; i < 8; i++) await work.send(i);
    const s1 = await client();
    const h1 = s1.channel<number>('work');
    expect(await h1.receive()).to.equal(0);
    await until(() => work.length === 0, 5000, 'client to prefetch');
    await s1.close();
    await until(() => work.length === 7, 5000, 'prefetched values to return');
    const s2 = await client();
    const h2 = s2.channel<number>('work');
    const rest: number[] = [];
    for (let i = 0; i < 7; i++) rest.push(await h2.receive());
    expect(rest).to.deep.equal([1, 2, 3, 4, 5, 6, 7]);
  });
});
