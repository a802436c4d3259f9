/**
 * The owner ports the exporter serves a channel through (lib/session/owner-port.ts): the one on a
 * local Channel, driven by hand with no stream, and the one on a forwarded remote handle, over a
 * real server that hands one client's channel on to another, in both directions.
 */
import { expect } from 'chai';
import { Channel, type ChannelLike } from '../lib/index.js';
import { LocalPort } from '../lib/session/local-port.js';
import { NOTHING, type PortListener } from '../lib/session/owner-port.js';
import { rejection } from './helpers/assert.js';
import { startServer, teardown, useTransport } from './helpers/net.js';

/** A listener that writes down what its port calls back. */
function recorder(): PortListener & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    given: () => calls.push('given'),
    taken: (value) => calls.push(`taken ${String(value)}`),
    exhausted: () => calls.push('exhausted'),
  };
}

describe('the owner port on a local channel', () => {
  it('hands values in while there is room, then parks them in order and calls `given` as each goes in', async () => {
    const ch = new Channel<number>(1);
    const listener = recorder();
    const port = new LocalPort(ch as Channel<unknown>, listener);
    expect(port.give(1)).to.equal(true);
    expect(port.give(2)).to.equal(false);
    expect(port.give(3)).to.equal(false);
    expect(ch.waitingSenders).to.equal(2);
    expect(await ch.receive()).to.equal(1);
    expect(listener.calls).to.deep.equal(['given']);
    expect(await ch.receive()).to.equal(2);
    expect(await ch.receive()).to.equal(3);
    expect(listener.calls).to.deep.equal(['given', 'given']);
  });

  it('takes what is at hand, else NOTHING; a wait ends with `taken` or, at close, `exhausted`', () => {
    const ch = new Channel<number>(2);
    const listener = recorder();
    const port = new LocalPort(ch as Channel<unknown>, listener);
    expect(port.tryTake()).to.equal(NOTHING);
    ch.trySend(7);
    expect(port.tryTake()).to.equal(7);
    port.awaitValue();
    expect(port.waiting).to.equal(true);
    ch.trySend(8);
    expect(port.waiting).to.equal(false);
    port.awaitValue();
    ch.close();
    expect(listener.calls).to.deep.equal(['taken 8', 'exhausted']);
    expect(port.drained).to.equal(true);
  });

  it('detach withdraws the parked values and the wait: the channel never sees them', () => {
    const ch = new Channel<number>(0);
    const listener = recorder();
    const port = new LocalPort(ch as Channel<unknown>, listener);
    port.give(1);
    port.give(2);
    port.awaitValue();
    port.detach();
    expect(ch.waitingSenders + ch.waitingReceivers).to.equal(0);
    expect(port.waiting).to.equal(false);
    expect(ch.tryReceive()).to.deep.equal({ ok: false, closed: false });
    expect(listener.calls).to.deep.equal([]);
  });

  it('a close refuses the parked values: no `given`, and a value put back still drains first', async () => {
    const ch = new Channel<number>(1);
    const listener = recorder();
    const port = new LocalPort(ch as Channel<unknown>, listener);
    port.give(1);
    port.give(2);
    ch.close();
    expect(listener.calls).to.deep.equal([]);
    expect(port.drained).to.equal(false);
    port.putBack(0);
    expect(await ch.receive()).to.equal(0);
    expect(await ch.receive()).to.equal(1);
    expect(port.drained).to.equal(true);
  });
});

for (const transport of ['h2', 'ws'] as const) describe(`a forwarded channel over ${transport === 'h2' ? 'HTTP/2' : 'the WebSocket fallback'}`, function () {
  this.timeout(30_000);
  before(() => useTransport(transport));
  after(() => useTransport('h2'));
  afterEach(teardown);

  /** Alice's channel, and bob's handle on it through the server, which forwards alice's handle. */
  async function handOn(capacity: number): Promise<{ alices: Channel<string>; bobs: ChannelLike<string> }> {
    const { server, client } = await startServer();
    const meet = server.channel<ChannelLike<string>>('meet', 1);
    const alice = await client();
    const bob = await client();
    const alices = new Channel<string>(capacity);
    await alice.channel<ChannelLike<string>>('meet').send(alices);
    const relay = await meet.receive();
    server.channel<ChannelLike<string>>('handoff', 1).send(relay).catch(() => undefined);
    const bobs = await bob.channel<ChannelLike<string>>('handoff').receive();
    return { alices, bobs };
  }

  it('values alice sends into her channel reach bob, in order', async () => {
    const { alices, bobs } = await handOn(4);
    const sent = Array.from({ length: 50 }, (_, i) => `v${i}`);
    const sending = (async () => {
      for (const v of sent) await alices.send(v);
    })();
    const got: string[] = [];
    for (let i = 0; i < sent.length; i++) got.push(await bobs.receive());
    await sending;
    expect(got).to.deep.equal(sent);
  });

  it('bob sending and alice receiving through the server keeps the order', async () => {
    const { alices, bobs } = await handOn(0);
    const sent = Array.from({ length: 20 }, (_, i) => `w${i}`);
    const sending = (async () => {
      for (const v of sent) await bobs.send(v);
    })();
    const got: string[] = [];
    for (let i = 0; i < sent.length; i++) got.push(await alices.receive());
    await sending;
    expect(got).to.deep.equal(sent);
  });

  it('alice closing her channel with an error ends bob\'s iteration with that error, after the values', async () => {
    const { alices, bobs } = await handOn(2);
    await alices.send('last');
    alices.close(new Error('alice is done'));
    const got: string[] = [];
    let thrown: unknown;
    try {
      for await (const v of bobs) got.push(v);
    } catch (err) {
      thrown = err;
    }
    expect(got).to.deep.equal(['last']);
    expect((thrown as Error).message).to.equal('alice is done');
  });

  it('bob closing the handle closes alice\'s channel', async () => {
    const { alices, bobs } = await handOn(1);
    bobs.close();
    expect((await rejection(alices.receive())).code).to.equal('ERR_CHANNEL_CLOSED');
  });
});
