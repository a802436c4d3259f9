/**
 * Rendezvous across a stream (docs/PROTOCOL.md §5.2): a local send into a capacity-0 channel that
 * a remote handle's demand took resolves only once the remote's program took the value; a handle
 * asks for a value ahead of its program only when opened with `prefetch: 1`, and by default
 * captures nothing a local or another remote receiver could take.
 */
import http2 from 'node:http2';
import { expect } from 'chai';
import { Channel, NetchanError, select, type RemoteChannelOptions } from '../lib/index.js';
import { FrameType } from '../lib/wire/frames.js';
import { RawStream } from './helpers/raw-stream.js';
import { rejection, track } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, tick, useTransport } from './helpers/net.js';

const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/**
 * A capacity-0 server channel `name` and a client handle on it (with `options`) that has
 * received one value from it, its sender resolved: a handle that has started receiving.
 */
async function afterOneReceive(options: RemoteChannelOptions = {}, name = 'out') {
  const { server, client } = await startServer();
  const ch = server.channel<number>(name, 0);
  const session = await client();
  const remote = session.channel<number>(name, options);
  const first = ch.send(1);
  expect(await remote.receive()).to.equal(1);
  await first;
  return { server, session, ch, remote };
}

for (const transport of ['h2', 'ws', 'memory'] as const) describe(`rendezvous over ${transport}`, function () {
  this.timeout(30_000);
  before(() => useTransport(transport));
  after(() => useTransport('h2'));
  afterEach(teardown);

  describe('by default a remote handle asks for nothing ahead of its program', () => {
    it('a send with a local receiver waiting goes to it, not to a remote handle that received before', async () => {
      const { ch, remote } = await afterOneReceive({}, 'jobs');
      await tick(50);
      const local = track(ch.receive());
      await ch.send(2);
      await until(() => local.done);
      expect(local.value).to.equal(2);
      expect(remote.length).to.equal(0);
    });

    it('a busy remote worker does not hold a job an idle worker could run', async () => {
      const { server, client } = await startServer();
      const ch = server.channel<number>('work', 0);
      const a = (await client()).channel<number>('work');
      const b = (await client()).channel<number>('work');
      const p1 = ch.send(1);
      expect(await a.receive()).to.equal(1); // worker a starts a long job
      await p1;
      await tick(50);
      const got: number[] = [];
      const stop = new AbortController();
      void (async () => {
        for (;;) got.push(await b.receive({ signal: stop.signal }));
      })().catch(() => undefined);
      await tick(50);
      for (const v of [2, 3]) {
        const s = track(ch.send(v));
        await until(() => s.done, 5000, `send ${v} to complete with worker b idle`);
        expect(s.error).to.equal(undefined);
      }
      expect(got).to.deep.equal([2, 3]);
      stop.abort();
    });

    it('a tryReceive that found nothing leaves no demand behind', async () => {
      const { server, client } = await startServer();
      const ch = server.channel<number>('poll', 0);
      const remote = (await client()).channel<number>('poll');
      await tick(50);
      expect(remote.tryReceive().ok).to.equal(false);
      await tick(100);
      expect(ch.trySend(5), 'trySend on a rendezvous channel with no receiver waiting').to.equal(false);
    });
  });

  describe('a send a remote handle holds', () => {
    it('with prefetch 1, after its first receive, a remote handle on a capacity-0 channel has the next value at hand, and the send still waits for its program', async () => {
      const { ch, remote } = await afterOneReceive({ prefetch: 1 });
      const second = track(ch.send(2));
      // the standing credit brought the value over before the program asked: no round trip then
      await until(() => remote.length === 1, 5000, 'the value to reach the remote handle');
      await tick(100);
      expect(second.done, 'send resolved before the remote program took the value').to.equal(false);
      expect(ch.waitingSenders, 'the held send is not waiting in the channel').to.equal(0);
      expect(await remote.receive()).to.equal(2);
      await until(() => second.done, 5000, 'send to resolve on the ACK');
      expect(second.error).to.equal(undefined);
    });

    it('a value a remote handle holds goes back when it lets go, its send still waiting, to the next receiver', async () => {
      const { ch, remote } = await afterOneReceive({ prefetch: 1 });
      const second = track(ch.send(2));
      await until(() => remote.length === 1);
      remote.release();
      await until(() => ch.waitingSenders === 1, 5000, 'the sender to wait in the channel again');
      expect(second.done).to.equal(false);
      expect(await ch.receive()).to.equal(2);
      await until(() => second.done);
      expect(second.error).to.equal(undefined);
    });

    it('an abort of a send a remote handle holds rejects with mayHaveBeenDelivered, and the program still gets the value', async () => {
      const { ch, remote } = await afterOneReceive({ prefetch: 1 });
      const ac = new AbortController();
      const second = ch.send(2, { signal: ac.signal });
      await until(() => remote.length === 1);
      ac.abort();
      const err = await rejection(second);
      expect(err).to.be.instanceOf(NetchanError);
      expect((err as NetchanError).code).to.equal('ERR_ABORTED');
      expect((err as NetchanError).mayHaveBeenDelivered).to.equal(true);
      expect(await remote.receive()).to.equal(2);
      // nothing was left behind: the next value goes the same way
      const third = track(ch.send(3));
      expect(await remote.receive()).to.equal(3);
      await until(() => third.done);
      expect(third.error).to.equal(undefined);
    });

    it('a send a remote handle holds when its channel closes rejects with mayHaveBeenDelivered; the value reaches the remote program, or drains from the channel if the handle lets go', async () => {
      const { server, client } = await startServer();
      const session = await client();
      for (const takes of [true, false]) {
        const ch = server.channel<number>(`out-${takes}`, 0);
        const remote = session.channel<number>(`out-${takes}`, { prefetch: 1 });
        const first = ch.send(1);
        expect(await remote.receive()).to.equal(1);
        await first;
        const second = ch.send(2);
        await until(() => remote.length === 1);
        ch.close();
        const err = await rejection(second);
        expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
        expect(err.mayHaveBeenDelivered).to.equal(true);
        if (takes) {
          expect(await remote.receive()).to.equal(2);
        } else {
          remote.release();
          await until(() => ch.length === 1, 5000, 'the value to come back to the closed channel');
          expect(await ch.receive()).to.equal(2);
        }
      }
    });

    it('a select send case a remote handle holds is the one that fires, once its program took the value', async () => {
      const { ch, remote } = await afterOneReceive({ prefetch: 1 });
      const other = new Channel<number>(0);
      const picked = track(select([{ send: ch, value: 2 }, { receive: other }]));
      await until(() => remote.length === 1);
      expect(other.trySend(9), 'the other case withdrew when the remote took the value').to.equal(false);
      await tick(50);
      expect(picked.done).to.equal(false);
      expect(await remote.receive()).to.equal(2);
      await until(() => picked.done);
      expect(picked.value).to.deep.equal({ index: 0, ok: true });
    });

    it('a select with default never waits for a remote program', async () => {
      const { ch, remote } = await afterOneReceive({ prefetch: 1 });
      await until(() => ch.waitingReceivers === 1, 5000, 'the standing credit');
      const picked = await select([{ send: ch, value: 2 }], { default: true });
      // the remote asked for a value: it is handed over at once, as trySend would, not held
      expect(picked).to.deep.equal({ index: 0, ok: true });
      expect(await remote.receive()).to.equal(2);
    });

    for (const parked of [false, true]) {
      it(`a select whose held send comes back waits on every case again (${parked ? 'the case parked first' : 'taken at once'})`, async () => {
        const { ch, remote } = await afterOneReceive({ prefetch: 1 });
        const quit = new Channel<number>(0);
        if (parked) await tick(50);
        else await until(() => ch.waitingReceivers === 1, 5000, 'the standing credit');
        const picked = track(select(parked ? [{ receive: quit }, { send: ch, value: 2 }] : [{ send: ch, value: 2 }, { receive: quit }]));
        await until(() => remote.length === 1);
        remote.release(); // the handle lets go: the value comes back, the select waits again
        await until(() => ch.waitingSenders === 1, 5000, 'the select send to wait again');
        expect(picked.done).to.equal(false);
        if (parked) {
          quit.close();
          await until(() => picked.done);
          expect(picked.value).to.deep.equal({ index: 0, ok: false });
        } else {
          await quit.send(7);
          await until(() => picked.done);
          expect(picked.value).to.deep.equal({ index: 1, value: 7, ok: true });
        }
        // the send case did not happen: the channel has nothing left
        expect(ch.waitingSenders).to.equal(0);
        expect(ch.tryReceive().ok).to.equal(false);
      });
    }
  });
});

describe('rendezvous against a hostile peer', function () {
  this.timeout(30_000);
  afterEach(teardown);

  it("a peer that asks for values and never acknowledges holds the server's senders only until the channel closes", async () => {
    const s = await startServer();
    const jobs = s.server.channel<number>('jobs', 0);
    const { caCert } = await testCertificates();
    const conn = http2.connect(`https://localhost:${s.port}`, { ca: caCert });
    conn.on('error', () => undefined);
    onTeardown(() => void conn.destroy());
    await new Promise<void>((r) => conn.once('connect', () => r()));
    const control = new RawStream(conn.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-kind': 'session' }));
    const sid = String((await control.response)['netchan-session']);
    const named = new RawStream(conn.request({ ':method': 'POST', ':path': '/', 'netchan-version': '1', 'netchan-session': sid, 'netchan-stream': 'n0', 'netchan-kind': 'channel', 'netchan-name': 'jobs' }));
    await named.opened();
    named.send(FrameType.CREDIT, u32(4096));
    await tick(100);
    const results: (NetchanError | undefined)[] = [];
    const sends = Array.from({ length: 100 }, (_, i) =>
      jobs.send(i).then(
        () => results.push(undefined),
        (e: NetchanError) => results.push(e),
      ),
    );
    await until(() => named.values().length === 100, 5000, 'the values to reach the raw client');
    await tick(100);
    expect(results.length, 'no send resolved without an ACK').to.equal(0);
    // an honest client is not held up meanwhile
    const other = s.server.channel<number>('other', 0);
    const session = await s.client();
    const h = session.channel<number>('other');
    const sent = other.send(1);
    expect(await h.receive()).to.equal(1);
    await sent;
    jobs.close();
    await Promise.all(sends);
    expect(results.length).to.equal(100);
    for (const e of results) {
      expect(e?.code).to.equal('ERR_CHANNEL_CLOSED');
      expect(e?.mayHaveBeenDelivered).to.equal(true);
    }
  });
});
