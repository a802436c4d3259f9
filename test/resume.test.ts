/**
 * Session resumption (docs/PROTOCOL.md §4.5): a fault-injecting TCP relay between client and
 * server cuts every connection mid-stream; sessions resume with nothing lost or duplicated and
 * order kept per channel. A session not resumed within its lease ends, and what its client had
 * not received goes to others.
 */
import net from 'node:net';
import { expect } from 'chai';
import { Channel, connect, type ConnectOptions, type Session } from '../lib/index.js';
import type { FramedStream } from '../lib/session/framed-stream.js';
import { rejection } from './helpers/assert.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, type Started } from './helpers/net.js';

/** A TCP relay on loopback that can cut all its connections, or refuse new ones. */
interface Relay {
  port: number;
  /** Connections relayed so far. */
  accepted: number;
  /** Destroys every relayed connection now (both sides), as a network fault would. */
  cut(): void;
  /** While true, new connections are dropped at once. */
  refusing: boolean;
}

async function startRelay(targetPort: number): Promise<Relay> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const relay: Relay = {
    port: 0,
    accepted: 0,
    refusing: false,
    cut() {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
  };
  const server = net.createServer((client) => {
    if (relay.refusing) return client.destroy();
    relay.accepted++;
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.port = (server.address() as net.AddressInfo).port;
  onTeardown(
    () =>
      new Promise<void>((resolve) => {
        relay.cut();
        server.close(() => resolve());
      }),
  );
  return relay;
}

/** A client session through the relay. */
async function clientVia(relay: Relay, options: ConnectOptions = {}): Promise<Session> {
  const { caCert } = await testCertificates();
  const session = await connect(`https://localhost:${relay.port}/`, { ca: caCert, ...options });
  onTeardown(() => session.close());
  return session;
}

/** Cuts the relay's connections `times` times, each once `progress()` moved on by `every`. */
async function cutRepeatedly(relay: Relay, times: number, progress: () => number, every: number): Promise<void> {
  for (let i = 1; i <= times; i++) {
    await until(() => progress() >= i * every, 20_000, `progress before cut ${i}`);
    relay.cut();
  }
}

for (const transport of ['h2', 'ws'] as const) {
  describe(`session resumption over ${transport}`, function () {
    this.timeout(60_000);
    afterEach(teardown);

    let s: Started;
    let relay: Relay;
    beforeEach(async () => {
      s = await startServer({ sessionLeaseMs: 5000 });
      relay = await startRelay(s.port);
    });

    it('client → server: 20,000 sends across 5 cuts arrive exactly once, in order', async () => {
      const inbox = s.server.channel<number>('inbox', 256);
      const session = await clientVia(relay, { transport });
      const events: string[] = [];
      session.on('disconnect', () => events.push('disconnect'));
      session.on('reconnect', () => events.push('reconnect'));
      const h = session.channel<number>('inbox');
      const N = 20_000;
      let sent = 0;
      const producer = (async () => {
        for (let i = 0; i < N; i++) {
          await h.send(i);
          sent++;
        }
      })();
      const got: number[] = [];
      const consumer = (async () => {
        while (got.length < N) got.push(await inbox.receive());
      })();
      await cutRepeatedly(relay, 5, () => sent, 3000);
      await producer;
      await consumer;
      expect(got.length).to.equal(N);
      for (let i = 0; i < N; i++) if (got[i] !== i) expect.fail(`value ${i} arrived as ${got[i]}`);
      expect(relay.accepted).to.be.greaterThan(5);
      expect(events.filter((e) => e === 'reconnect').length).to.be.greaterThan(0);
      expect(events[0]).to.equal('disconnect');
      expect(session.closed).to.equal(false);
    });

    it('a pair stream: 10,000 values each way across 5 cuts arrive exactly once, in order', async () => {
      const outbox = s.server.channel<number>('outbox', 64);
      const inbox = s.server.channel<number>('inbox', 64);
      const session = await clientVia(relay, { transport });
      const { receive, send } = session.pair<number>('outbox', 'inbox');
      const N = 10_000;
      void (async () => {
        for (let i = 0; i < N; i++) await outbox.send(i);
      })();
      let sent = 0;
      const producer = (async () => {
        for (let i = 0; i < N; i++) {
          await send.send(i);
          sent++;
        }
      })();
      const down: number[] = [];
      const up: number[] = [];
      const consumers = Promise.all([
        (async () => {
          while (down.length < N) down.push(await receive.receive());
        })(),
        (async () => {
          while (up.length < N) up.push(await inbox.receive());
        })(),
      ]);
      await cutRepeatedly(relay, 5, () => Math.min(sent, down.length), 1500);
      await producer;
      await consumers;
      for (let i = 0; i < N; i++) {
        if (down[i] !== i) expect.fail(`server → client value ${i} arrived as ${down[i]}`);
        if (up[i] !== i) expect.fail(`client → server value ${i} arrived as ${up[i]}`);
      }
      await new Promise((r) => setTimeout(r, 100));
      expect(receive.tryReceive().ok).to.equal(false);
      expect(inbox.length).to.equal(0);
      expect(relay.accepted).to.be.greaterThan(5);
      expect(s.server.stats().streams).to.equal(2);
    });

    it('a quiet stream still gets its receipts: what each side keeps for replay drains without further traffic', async () => {
      // Receipts ride along with a stream's own writes; a stream with nothing more to write
      // confirms what it got within RECEIPT_DELAY_MS (docs/PROTOCOL.md §4.5). Capacity 1024: acks
      // of 3 values are deferred too, so nothing else would ever carry them.
      const inbox = s.server.channel<number>('quiet', 1024);
      const session = await clientVia(relay, { transport });
      const h = session.channel<number>('quiet');
      for (let i = 0; i < 3; i++) await h.send(i);
      for (let i = 0; i < 3; i++) expect(await inbox.receive()).to.equal(i);
      type WithFramed = { framedBySid: Map<string, FramedStream> };
      const unconfirmed = (x: unknown) => [...(x as WithFramed).framedBySid.values()].reduce((n, fs) => n + fs.unconfirmedFrames, 0);
      const serverSession = [...(s.server as unknown as { sessions: Map<string, unknown> }).sessions.values()][0];
      expect(serverSession).to.not.equal(undefined);
      await until(() => unconfirmed(session) === 0 && unconfirmed(serverSession) === 0, 3000, 'every frame confirmed both ways');
      // and the values still flow afterwards
      await h.send(3);
      expect(await inbox.receive()).to.equal(3);
    });

    it('server → client: 20,000 values across 5 cuts are received exactly once, in order', async () => {
      const outbox = s.server.channel<number>('outbox', 256);
      const N = 20_000;
      void (async () => {
        for (let i = 0; i < N; i++) await outbox.send(i);
      })();
      const session = await clientVia(relay, { transport });
      const h = session.channel<number>('outbox');
      const got: number[] = [];
      const consumer = (async () => {
        while (got.length < N) got.push(await h.receive());
      })();
      await cutRepeatedly(relay, 5, () => got.length, 3000);
      await consumer;
      for (let i = 0; i < N; i++) if (got[i] !== i) expect.fail(`value ${i} arrived as ${got[i]}`);
      // nothing more is on its way: the channel is empty and no value arrives twice
      await new Promise((r) => setTimeout(r, 100));
      expect(h.tryReceive().ok).to.equal(false);
      expect(outbox.length).to.equal(0);
    });

    it('request/reply with reply channels keeps working across cuts', async () => {
      const squares = s.server.channel<{ n: number; reply: Channel<number> }>('square', 16);
      void (async () => {
        for await (const { n, reply } of squares) await reply.send(n * n);
      })().catch(() => undefined);
      const session = await clientVia(relay, { transport });
      const square = session.channel<{ n: number; reply: Channel<number> }>('square');
      let done = 0;
      const worker = (async () => {
        for (let n = 0; n < 400; n++) {
          const reply = new Channel<number>();
          // a cut can land while a new reply channel is being opened: that send fails as not
          // delivered (new streams wait for the connection), and is simply tried again
          for (;;) {
            try {
              await square.send({ n, reply });
              break;
            } catch (err) {
              expect((err as { mayHaveBeenDelivered?: boolean }).mayHaveBeenDelivered).to.equal(false);
              await new Promise((r) => setTimeout(r, 20));
            }
          }
          expect(await reply.receive()).to.equal(n * n);
          done++;
        }
      })();
      await cutRepeatedly(relay, 3, () => done, 80);
      await worker;
      expect(done).to.equal(400);
    });

    it('a session not resumed within its lease ends; what its client prefetched goes to another client', async () => {
      const work = s.server.channel<number>('work', 16);
      for (let i = 0; i < 16; i++) await work.send(i);
      const victim = await clientVia(relay, { transport });
      const h = victim.channel<number>('work');
      expect(await h.receive()).to.equal(0);
      await until(() => work.length === 0, 5000, 'the prefetch');
      // the ACK of value 0 has left (it is written at the end of the turn) and reached the server
      // (otherwise value 0 would rightly come back too)
      await new Promise((r) => setImmediate(r));
      await until(() => s.server.stats().bytesIn === victim.stats().bytesOut, 5000, 'the server to read all the client wrote');
      const closed = new Promise<Error>((resolve) => victim.once('close', resolve));
      relay.refusing = true;
      relay.cut();
      // the server keeps the session for its lease, then ends it and takes the values back
      await until(() => victim.disconnected, 5000, 'the client to notice');
      expect(s.server.stats().sessions).to.equal(1);
      await until(() => s.server.stats().sessions === 0, 10_000, 'the lease to run out');
      await until(() => work.length === 15, 5000, 'the prefetched values to come back');
      const err = (await closed) as { code?: string };
      expect(err.code).to.be.oneOf(['ERR_CONNECTION_LOST', 'ERR_UNKNOWN_SESSION']);
      expect((await rejection(h.receive())).code).to.be.oneOf(['ERR_CONNECTION_LOST', 'ERR_UNKNOWN_SESSION', 'ERR_SESSION_CLOSED']);
      const other = await s.client({ transport });
      const h2 = other.channel<number>('work');
      const rest: number[] = [];
      for (let i = 0; i < 15; i++) rest.push(await h2.receive());
      expect(rest).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    });

    it('a session that closes cleanly is not kept for a lease', async () => {
      const session = await clientVia(relay, { transport });
      expect(session.leaseMs).to.equal(5000);
      await session.close();
      await until(() => s.server.stats().sessions === 0, 3000, 'the session to end at once');
    });
  });
}
