import { setMaxListeners } from 'node:events';
import { expect } from 'chai';
import { Channel, select, NetchanError } from '../lib/index.js';
import { rejection, track } from './helpers/assert.js';

/** Lets every pending microtask and immediate run, so that "did not resolve" is observable. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('Channel', () => {
  describe('capacity 0 (rendezvous)', () => {
    it('send resolves only once a receiver has taken the value', async () => {
      const ch = new Channel<number>();
      const sent = track(ch.send(1));
      await settle();
      expect(sent.done).to.equal(false);
      expect(ch.length).to.equal(0);
      expect(await ch.receive()).to.equal(1);
      await settle();
      expect(sent.done).to.equal(true);
      expect(sent.error).to.equal(undefined);
    });

    it('a receiver waiting first gets the value and the send resolves', async () => {
      const ch = new Channel<string>();
      const got = ch.receive();
      await ch.send('x');
      expect(await got).to.equal('x');
    });

    it('trySend fails without a waiting receiver, succeeds with one', async () => {
      const ch = new Channel<number>();
      expect(ch.trySend(1)).to.equal(false);
      const got = ch.receive();
      expect(ch.trySend(2)).to.equal(true);
      expect(await got).to.equal(2);
    });

    it('tryReceive takes from a waiting sender', async () => {
      const ch = new Channel<number>();
      expect(ch.tryReceive()).to.deep.equal({ ok: false, closed: false });
      const sent = ch.send(5);
      expect(ch.tryReceive()).to.deep.equal({ ok: true, value: 5 });
      await sent;
    });
  });

  describe('capacity N', () => {
    it('buffers N values and blocks the next sender', async () => {
      const ch = new Channel<number>(2);
      await ch.send(1);
      await ch.send(2);
      expect(ch.length).to.equal(2);
      expect(ch.capacity).to.equal(2);
      const third = track(ch.send(3));
      await settle();
      expect(third.done).to.equal(false);
      expect(ch.trySend(4)).to.equal(false);
      expect(await ch.receive()).to.equal(1);
      await settle();
      expect(third.done).to.equal(true);
      expect(ch.length).to.equal(2);
      expect(await ch.receive()).to.equal(2);
      expect(await ch.receive()).to.equal(3);
    });

    it('keeps FIFO order across buffer and waiting senders', async () => {
      const ch = new Channel<number>(3);
      const sends = [];
      for (let i = 0; i < 10; i++) sends.push(ch.send(i));
      const got = [];
      for (let i = 0; i < 10; i++) got.push(await ch.receive());
      await Promise.all(sends);
      expect(got).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    });

    it('serves waiting receivers first come, first served', async () => {
      const ch = new Channel<number>(1);
      const a = ch.receive();
      const b = ch.receive();
      const c = ch.receive();
      await ch.send(1);
      await ch.send(2);
      await ch.send(3);
      expect([await a, await b, await c]).to.deep.equal([1, 2, 3]);
    });

    it('rejects a bad capacity', () => {
      expect(() => new Channel(-1)).to.throw(NetchanError).with.property('code', 'ERR_INVALID_ARGUMENT');
      expect(() => new Channel(1.5)).to.throw(NetchanError).with.property('code', 'ERR_INVALID_ARGUMENT');
    });
  });

  describe('close', () => {
    it('drains buffered values, then receive rejects ERR_CHANNEL_CLOSED', async () => {
      const ch = new Channel<number>(3);
      await ch.send(1);
      await ch.send(2);
      ch.close();
      expect(ch.closed).to.equal(true);
      expect(await ch.receive()).to.equal(1);
      expect(ch.tryReceive()).to.deep.equal({ ok: true, value: 2 });
      expect(ch.tryReceive()).to.deep.equal({ ok: false, closed: true });
      const err = await rejection(ch.receive());
      expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
      expect(err.cause).to.equal(undefined);
    });

    it('carries the close error as cause', async () => {
      const ch = new Channel<number>();
      const boom = new Error('boom');
      ch.close(boom);
      const err = await rejection(ch.receive());
      expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
      expect(err.cause).to.equal(boom);
      expect(ch.closeReason).to.equal(boom);
    });

    it('send on a closed channel rejects, trySend throws', async () => {
      const ch = new Channel<number>(5);
      ch.close();
      expect((await rejection(ch.send(1))).code).to.equal('ERR_CHANNEL_CLOSED');
      expect(() => ch.trySend(1)).to.throw(NetchanError).with.property('code', 'ERR_CHANNEL_CLOSED');
      expect(ch.length).to.equal(0);
    });

    it('rejects waiting senders and waiting receivers', async () => {
      const ch = new Channel<number>();
      const s = ch.send(1);
      const other = new Channel<number>();
      const r = other.receive();
      ch.close();
      other.close();
      expect((await rejection(s)).code).to.equal('ERR_CHANNEL_CLOSED');
      expect((await rejection(r)).code).to.equal('ERR_CHANNEL_CLOSED');
    });

    it('ends for await after the last value', async () => {
      const ch = new Channel<number>(10);
      for (let i = 0; i < 5; i++) await ch.send(i);
      ch.close();
      const got: number[] = [];
      for await (const v of ch) got.push(v);
      expect(got).to.deep.equal([0, 1, 2, 3, 4]);
    });

    it('for await throws the close error after the last value', async () => {
      const ch = new Channel<number>(10);
      await ch.send(1);
      const boom = new Error('boom');
      ch.close(boom);
      const got: number[] = [];
      let caught: unknown;
      try {
        for await (const v of ch) got.push(v);
      } catch (err) {
        caught = err;
      }
      expect(got).to.deep.equal([1]);
      expect(caught).to.equal(boom);
    });

    it('a for await waiting for a value ends when the channel closes, or throws its close error', async () => {
      for (const capacity of [0, 4]) {
        const plain = new Channel<number>(capacity);
        const failing = new Channel<number>(capacity);
        const boom = new Error('boom');
        const collect = async (ch: Channel<number>) => {
          const got: number[] = [];
          try {
            for await (const v of ch) got.push(v);
          } catch (err) {
            return { got, err };
          }
          return { got, err: undefined };
        };
        const a = collect(plain);
        const b = collect(failing);
        await plain.send(1); // handed to the waiting step
        await failing.send(2);
        await new Promise((r) => setImmediate(r)); // both steps wait again
        plain.close();
        failing.close(boom);
        expect(await a).to.deep.equal({ got: [1], err: undefined });
        expect(await b).to.deep.equal({ got: [2], err: boom });
      }
    });

    it('closing twice is a no-op and keeps the first error', () => {
      const ch = new Channel<number>();
      const first = new Error('first');
      ch.close(first);
      ch.close(new Error('second'));
      expect(ch.closeReason).to.equal(first);
    });

    it('notifies onClose listeners once, and at once when already closed', () => {
      const ch = new Channel<number>();
      const seen: unknown[] = [];
      const off = ch.onClose((e) => seen.push(['a', e]));
      ch.onClose((e) => seen.push(['b', e]))();
      ch.close();
      ch.close();
      ch.onClose((e) => seen.push(['c', e]));
      off();
      expect(seen).to.deep.equal([['a', undefined], ['c', undefined]]);
    });
  });

  describe('abort', () => {
    it('an aborted send never delivers its value', async () => {
      const ch = new Channel<number>();
      const ac = new AbortController();
      const s = ch.send(1, { signal: ac.signal });
      ac.abort(new Error('stop'));
      const err = await rejection(s);
      expect(err.code).to.equal('ERR_ABORTED');
      expect((err.cause as Error).message).to.equal('stop');
      expect(ch.tryReceive()).to.deep.equal({ ok: false, closed: false });
      expect(ch.waitingSenders).to.equal(0);
    });

    it('an aborted receive never takes a value', async () => {
      const ch = new Channel<number>();
      const ac = new AbortController();
      const r = ch.receive({ signal: ac.signal });
      ac.abort();
      expect((await rejection(r)).code).to.equal('ERR_ABORTED');
      expect(ch.trySend(1)).to.equal(false);
      const next = ch.receive();
      await ch.send(2);
      expect(await next).to.equal(2);
    });

    it('an already aborted signal rejects at once without taking or giving', async () => {
      const ch = new Channel<number>(1);
      await ch.send(7);
      const signal = AbortSignal.abort();
      expect((await rejection(ch.receive({ signal }))).code).to.equal('ERR_ABORTED');
      expect((await rejection(ch.send(8, { signal }))).code).to.equal('ERR_ABORTED');
      expect(ch.length).to.equal(1);
      expect(await ch.receive()).to.equal(7);
    });

    it('many aborted waits leave nothing behind', async () => {
      const ch = new Channel<number>();
      const ac = new AbortController();
      setMaxListeners(0, ac.signal);
      const waits: Promise<unknown>[] = [];
      for (let i = 0; i < 10_000; i++) {
        waits.push(ch.receive({ signal: ac.signal }).catch(() => undefined));
        waits.push(ch.send(i, { signal: ac.signal }).catch(() => undefined));
      }
      // every receive above met the send right after it; the rest wait on the signal
      ac.abort();
      await Promise.all(waits);
      expect(ch.waitingReceivers).to.equal(0);
      expect(ch.waitingSenders).to.equal(0);

      const ac2 = new AbortController();
      setMaxListeners(0, ac2.signal);
      const pending = [];
      for (let i = 0; i < 10_000; i++) pending.push(ch.receive({ signal: ac2.signal }).catch((e: NetchanError) => e.code));
      expect(ch.waitingReceivers).to.equal(10_000);
      ac2.abort();
      const codes = await Promise.all(pending);
      expect(new Set(codes)).to.deep.equal(new Set(['ERR_ABORTED']));
      expect(ch.waitingReceivers).to.equal(0);
    });

    it('removes its abort listener once the operation completes', async () => {
      const ch = new Channel<number>();
      const ac = new AbortController();
      let added = 0;
      let removed = 0;
      const add = ac.signal.addEventListener.bind(ac.signal);
      const remove = ac.signal.removeEventListener.bind(ac.signal);
      ac.signal.addEventListener = ((...args: Parameters<typeof add>) => (added++, add(...args))) as typeof add;
      ac.signal.removeEventListener = ((...args: Parameters<typeof remove>) => (removed++, remove(...args))) as typeof remove;
      for (let i = 0; i < 100; i++) {
        const r = ch.receive({ signal: ac.signal });
        await ch.send(i);
        await r;
      }
      expect(added).to.equal(100);
      expect(removed).to.equal(100);
    });
  });

  describe('select', () => {
    it('receives from the ready case and takes nothing from the others', async () => {
      const a = new Channel<number>(1);
      const b = new Channel<number>(1);
      await b.send(2);
      const r = await select<number>([{ receive: a }, { receive: b }]);
      expect(r).to.deep.equal({ index: 1, value: 2, ok: true });
      expect(a.length).to.equal(0);
    });

    it('waits, fires exactly one case, and unparks the others', async () => {
      const a = new Channel<number>();
      const b = new Channel<number>();
      const c = new Channel<number>();
      const p = select<number>([{ receive: a }, { receive: b }, { send: c, value: 9 }]);
      expect(a.waitingReceivers + b.waitingReceivers + c.waitingSenders).to.equal(3);
      await b.send(5);
      expect(await p).to.deep.equal({ index: 1, value: 5, ok: true });
      expect(a.waitingReceivers).to.equal(0);
      expect(c.waitingSenders).to.equal(0);
      expect(a.trySend(1)).to.equal(false);
      expect(c.tryReceive()).to.deep.equal({ ok: false, closed: false });
    });

    it('a send case gives its value to a later receiver', async () => {
      const a = new Channel<number>();
      const out = new Channel<string>();
      const p = select<unknown>([{ receive: a }, { send: out as Channel<unknown>, value: 'hi' }]);
      expect(await out.receive()).to.equal('hi');
      expect(await p).to.deep.equal({ index: 1, ok: true });
      expect(a.waitingReceivers).to.equal(0);
    });

    it('with default returns at once when nothing is ready', async () => {
      const a = new Channel<number>();
      const b = new Channel<number>();
      expect(await select([{ receive: a }, { send: b, value: 1 }], { default: true })).to.deep.equal({ index: -1, ok: false });
      expect(a.waitingReceivers + b.waitingSenders).to.equal(0);
    });

    it('a receive case on a closed channel fires with ok false', async () => {
      const a = new Channel<number>();
      const b = new Channel<number>();
      const p = select([{ receive: a }, { receive: b }]);
      b.close();
      expect(await p).to.deep.equal({ index: 1, ok: false });
      expect(a.waitingReceivers).to.equal(0);
    });

    it('a send case on a closed channel rejects', async () => {
      const a = new Channel<number>();
      a.close();
      expect((await rejection(select([{ send: a, value: 1 }]))).code).to.equal('ERR_CHANNEL_CLOSED');
    });

    it('aborting a select leaves every channel untouched', async () => {
      const a = new Channel<number>();
      const b = new Channel<number>();
      const ac = new AbortController();
      const p = select([{ receive: a }, { send: b, value: 3 }], { signal: ac.signal });
      ac.abort();
      expect((await rejection(p)).code).to.equal('ERR_ABORTED');
      expect(a.waitingReceivers).to.equal(0);
      expect(b.waitingSenders).to.equal(0);
      expect(a.trySend(1)).to.equal(false);
    });

    it('picks among ready cases at random, so no case starves', async () => {
      const a = new Channel<number>(1000);
      const b = new Channel<number>(1000);
      const hits = [0, 0];
      for (let i = 0; i < 400; i++) {
        a.trySend(i);
        b.trySend(i);
        const r = await select([{ receive: a }, { receive: b }]);
        hits[r.index]!++;
      }
      expect(hits[0]).to.be.greaterThan(100);
      expect(hits[1]).to.be.greaterThan(100);
    });

    it('many selects on busy channels deliver each value exactly once', async () => {
      const a = new Channel<number>();
      const b = new Channel<number>();
      const got: number[] = [];
      const consumers = Array.from({ length: 8 }, async () => {
        for (;;) {
          const r = await select<number>([{ receive: a }, { receive: b }]);
          if (!r.ok) return;
          got.push(r.value as number);
        }
      });
      const producers = [a, b].map(async (ch, k) => {
        for (let i = 0; i < 500; i++) await ch.send(k * 1000 + i);
      });
      await Promise.all(producers);
      a.close();
      await Promise.all(consumers);
      expect(got.length).to.equal(1000);
      expect(new Set(got).size).to.equal(1000);
      b.close();
    });

    it('rejects a select with no cases and no default', async () => {
      expect((await rejection(select([]))).code).to.equal('ERR_INVALID_ARGUMENT');
    });
  });

  describe('returnValue', () => {
    it('puts a value back at the head, ahead of buffered values', async () => {
      const ch = new Channel<number>(2);
      await ch.send(2);
      ch.returnValue(1);
      expect(await ch.receive()).to.equal(1);
      expect(await ch.receive()).to.equal(2);
    });

    it('hands it to a waiting receiver, and still drains after close', async () => {
      const ch = new Channel<number>();
      const r = ch.receive();
      ch.returnValue(4);
      expect(await r).to.equal(4);
      ch.close();
      ch.returnValue(5);
      expect(await ch.receive()).to.equal(5);
    });
  });

  it('moves 100k values between many senders and receivers, each exactly once and FIFO per sender', async () => {
    const ch = new Channel<[number, number]>(16);
    const received = new Map<string, number[]>();
    const receivers = Array.from({ length: 4 }, async (_, r) => {
      for await (const [sender, i] of ch) {
        const key = `${r}/${sender}`;
        let list = received.get(key);
        if (!list) received.set(key, (list = []));
        list.push(i);
      }
    });
    await Promise.all(
      Array.from({ length: 4 }, async (_, s) => {
        for (let i = 0; i < 25_000; i++) await ch.send([s, i]);
      }),
    );
    ch.close();
    await Promise.all(receivers);
    let total = 0;
    for (const [, list] of received) {
      total += list.length;
      // what one receiver got from one sender is in the order it was sent
      expect(list).to.deep.equal([...list].sort((x, y) => x - y));
      expect(new Set(list).size).to.equal(list.length);
    }
    expect(total).to.equal(100_000);
  });
});
