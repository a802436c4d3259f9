/**
 * References outlive their use (the hardening issue): handles the program drops are released,
 * `release()` and `using` release at once, pending operations keep their handle, and a channel
 * limit is a clear ERR_LIMIT. Run over HTTP/2 and the WebSocket fallback. Ends with a short soak
 * (bench/soak.ts) whose counters must return to their baseline.
 */
import { expect } from 'chai';
import { Channel, type RemoteChannel, type Session } from '../lib/index.js';
import { fullGc } from '../bench/soak-sample.js';
import { soak } from '../bench/soak.js';
import { rejection } from './helpers/assert.js';
import { startServer, teardown, tick, until, useTransport } from './helpers/net.js';

const gc = fullGc();

/** Collects until `predicate` holds: dropped handles are released once they are collected. */
async function collectUntil(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    gc();
    await tick(10);
  }
}

interface Square {
  n: number;
  reply: Channel<number>;
}

/** Uses a named handle once and drops it (nothing of this frame outlives the call). */
async function sendOnce(session: Session, name: string, value: number): Promise<void> {
  const handle = session.channel<number>(name);
  await handle.send(value);
}

/** The README's server for one request: answers on the reply handle and drops it. */
async function answerOne(requests: Channel<Square>): Promise<void> {
  const { n, reply } = await requests.receive();
  await reply.send(n * n);
}

describe('hardening: references outlive their use', function () {
  this.timeout(60_000);
  afterEach(teardown);

  for (const transport of ['h2', 'ws'] as const) {
    describe(`over ${transport}`, () => {
      before(() => useTransport(transport));
      after(() => useTransport('h2'));

      it("regression: the README's request/reply pattern does not hang after 4,096 requests on one session", async () => {
        const { server, client } = await startServer();
        const requests = server.channel<Square>('square', 100);
        void (async () => {
          for await (const { n, reply } of requests) await reply.send(n * n);
        })();
        const session = await client();
        const square = session.channel<Square>('square');
        // no explicit collection here: the sessions ask for one as dropped handles pile up
        let next = 0;
        await Promise.all(
          Array.from({ length: 16 }, async () => {
            while (next < 5000) {
              const n = next++;
              const reply = new Channel<number>();
              await square.send({ n, reply });
              expect(await reply.receive()).to.equal(n * n);
            }
          }),
        );
        // the loop's variable holds the last reply handle; all the others are released
        await collectUntil(() => server.stats().channels <= 2 && session.stats().channels <= 2, 'reply channels released');
      });

      describe('a dropped handle is released', () => {
        it("the server's handle on a client's reply channel: the client's export ends too", async () => {
          const { server, client } = await startServer();
          const requests = server.channel<Square>('square', 4);
          const session = await client();
          const square = session.channel<Square>('square');
          const reply = new Channel<number>();
          const answered = answerOne(requests);
          await square.send({ n: 7, reply });
          expect(await reply.receive()).to.equal(49);
          await answered;
          expect(server.stats().channels).to.equal(2);
          await collectUntil(() => server.stats().channels === 1 && session.stats().channels === 1, 'reply stream gone on both sides');
          // the client's channel is the client's again alone: usable, nothing attached
          expect(reply.trySend(1)).to.equal(false);
        });

        it("a client's named handle", async () => {
          const { server, client } = await startServer();
          const jobs = server.channel<number>('jobs', 4);
          const session = await client();
          await sendOnce(session, 'jobs', 1);
          await sendOnce(session, 'jobs', 2);
          expect(await jobs.receive()).to.equal(1);
          expect(await jobs.receive()).to.equal(2);
          await collectUntil(() => server.stats().channels === 0 && session.stats().channels === 0, 'named streams gone');
          expect(server.stats().streams).to.equal(1); // the control stream
        });

        it('a server-owned channel reference the client decoded', async () => {
          const { server, client } = await startServer();
          const offers = server.channel<{ inbox: Channel<number> }>('offers', 1);
          const inbox = new Channel<number>(4);
          const session = await client();
          const received = session.channel<{ inbox: Channel<number> }>('offers');
          await offers.send({ inbox });
          // the client decodes the reference (a stream with netchan-ref), uses it once, drops it
          await (async () => {
            const { inbox: handle } = await received.receive();
            await handle.send(5);
          })();
          expect(await inbox.receive()).to.equal(5);
          received.release();
          await collectUntil(() => server.stats().channels === 0 && session.stats().channels === 0, 'reference stream gone');
          expect(server.stats().pendingReferences).to.equal(0);
        });

        it('values it prefetched go back to the channel, in order', async () => {
          const { server, client } = await startServer();
          const work = server.channel<number>('work', 8);
          for (let i = 1; i <= 8; i++) await work.send(i);
          const session = await client();
          await (async () => {
            const handle = session.channel<number>('work');
            expect(await handle.receive()).to.equal(1);
            await until(() => handle.length > 0, 5000, 'values prefetched');
          })();
          await collectUntil(() => server.stats().channels === 0, 'handle released');
          const rest: number[] = [];
          while (work.length > 0) rest.push(await work.receive());
          expect(rest).to.deep.equal([2, 3, 4, 5, 6, 7, 8]);
        });

        it('a pending receive keeps its handle', async () => {
          const { server, client } = await startServer();
          const later = server.channel<number>('later', 0);
          const session = await client();
          const value = session.channel<number>('later').receive();
          await until(() => server.stats().channels === 1, 5000, 'stream open');
          for (let i = 0; i < 5; i++) {
            gc();
            await tick(10);
          }
          expect(server.stats().channels).to.equal(1);
          await later.send(42);
          expect(await value).to.equal(42);
          await collectUntil(() => server.stats().channels === 0, 'released after the receive');
        });
      });

      it('`using` releases a handle', async () => {
        const { server, client } = await startServer();
        const jobs = server.channel<number>('jobs', 4);
        const session = await client();
        {
          using handle = session.channel<number>('jobs');
          await handle.send(1);
          expect(server.stats().channels).to.equal(1);
        }
        // released at the end of the block, no collection needed
        await until(() => server.stats().channels === 0 && session.stats().channels === 0, 5000, 'stream gone');
        expect(await jobs.receive()).to.equal(1);
        let kept: RemoteChannel<number> | undefined;
        {
          await using handle = session.channel<number>('jobs');
          kept = handle;
          await handle.send(2);
        }
        const err = await rejection(kept.send(3));
        expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
        expect(await jobs.receive()).to.equal(2);
      });

      describe('a channel limit rejects with ERR_LIMIT instead of hanging', () => {
        it('a send whose reply channel would exceed the limit', async () => {
          const { server, client } = await startServer({ maxChannelsPerSession: 4 });
          const requests = server.channel<Square>('square', 16);
          const session = await client();
          const square = session.channel<Square>('square');
          // the server program keeps three reply handles: with `square`, the session's four
          const held: Square[] = [];
          for (let n = 0; n < 3; n++) {
            await square.send({ n, reply: new Channel<number>() });
            held.push(await requests.receive());
          }
          const err = await rejection(square.send({ n: 3, reply: new Channel<number>() }));
          expect(err.code).to.equal('ERR_LIMIT');
          expect(err.mayHaveBeenDelivered).to.equal(false);
          expect(err.message).to.match(/4 channel streams/);
          // nothing was written: `square` is unharmed, and a released handle frees its place
          (held.pop() as Square & { reply: RemoteChannel<number> }).reply.release();
          await until(() => session.stats().channels === 3, 5000, 'released stream gone');
          const reply = new Channel<number>();
          await square.send({ n: 4, reply });
          const { n, reply: handle } = await requests.receive();
          await Promise.all([handle.send(n * n), reply.receive().then((v) => expect(v).to.equal(16))]);
        });

        it('session.channel(name) refused with 429: its operations fail with ERR_LIMIT', async () => {
          const { server, client } = await startServer({ maxChannelsPerSession: 1 });
          server.channel<number>('jobs', 4);
          const session = await client();
          const first = session.channel<number>('jobs');
          await first.send(1);
          const over = session.channel<number>('jobs');
          expect((await rejection(over.send(2))).code).to.equal('ERR_LIMIT');
          expect((await rejection(over.receive())).code).to.equal('ERR_LIMIT');
        });
      });

      // the full soak (a million) is npm run bench:soak; the fallback shares all but the mux
      const requests = transport === 'h2' ? 20_000 : 5_000;
      it(`soak: ${requests.toLocaleString('en')} request/replies on one session with reply channels and byte streams, counters back to their baseline`, async function () {
        this.timeout(300_000);
        const result = await soak({ requests, sampleEvery: requests / 2, transport, timeLimitMs: 240_000 });
        expect(result.timedOut).to.equal(false);
        const counts = (s: (typeof result.rows)[number]['server']) => [s.streams, s.channels, s.byteStreams, s.pendingReferences];
        const [baseline, ...later] = result.rows;
        for (const row of later) {
          expect(counts(row.server), `server after ${row.requests}`).to.deep.equal(counts(baseline!.server));
          expect(counts(row.client), `client after ${row.requests}`).to.deep.equal(counts(baseline!.client));
        }
      });
    });
  }
});
