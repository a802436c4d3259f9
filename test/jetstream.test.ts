/**
 * Shared channels on NATS JetStream, two netchan servers in this process on one real
 * nats-server: values sent through one server reach clients of the other, receivers compete,
 * fan-in merges, capacity holds senders back, close reaches every server, and what JetStream
 * cannot keep (references, a rendezvous) is refused with a clear error.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Channel, dial, jetstream, listen, type JetStreamBackend, type NetchanError, type SharedChannel } from '../lib/index.js';
import { Codec } from '../lib/wire/codec.js';
import { rejection, track } from './helpers/assert.js';
import { startNats, type Nats } from './helpers/nats.js';
import { onTeardown, startServer, teardown, tick, until, type Started } from './helpers/net.js';

let nats: Nats;
let n = 0;

async function backendOf(options: Partial<Parameters<typeof jetstream>[0]> = {}): Promise<JetStreamBackend> {
  const backend = await jetstream({ servers: nats.url, ackWaitMs: 2000, ...options });
  onTeardown(() => backend.close());
  return backend;
}

/** Two netchan servers sharing `name` (capacity given), each with its own backend connection. */
async function twoServers<T>(capacity: number): Promise<{ name: string; a: Started; b: Started; sa: SharedChannel<T>; sb: SharedChannel<T> }> {
  const name = `jobs.${++n}`;
  const [a, b] = [await startServer(), await startServer()];
  const sa = a.server.channel<T>(name, capacity, { backend: await backendOf() }) as SharedChannel<T>;
  const sb = b.server.channel<T>(name, capacity, { backend: await backendOf() }) as SharedChannel<T>;
  await Promise.all([sa.ready(), sb.ready()]);
  return { name, a, b, sa, sb };
}

describe('shared channels on JetStream', function () {
  this.timeout(30_000);
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await nats?.destroy();
  });
  afterEach(teardown);

  it('a value sent by a client of one server is received by a client of the other, and the server programs share it too', async () => {
    const { name, a, b, sa, sb } = await twoServers<string>(10);
    const ca = (await a.client()).channel<string>(name);
    const cb = (await b.client()).channel<string>(name);
    await ca.send('from a');
    expect(await cb.receive()).to.equal('from a');
    await cb.send('from b');
    expect(await sa.receive()).to.equal('from b');
    await sb.send('from server b');
    expect(await ca.receive()).to.equal('from server b');
  });

  it('every value exactly once: two senders on each server, receivers on both compete, and one sender\'s values stay in order for each receiver', async () => {
    const { name, a, b } = await twoServers<{ s: number; i: number }>(50);
    const N = 150;
    const senders = [await a.client(), await a.client(), await b.client(), await b.client()].map((s) => s.channel<{ s: number; i: number }>(name));
    const receivers = [await a.client(), await b.client(), await b.client()].map((s) => s.channel<{ s: number; i: number }>(name));
    const got: { s: number; i: number }[][] = receivers.map(() => []);
    let total = 0;
    const stop = new AbortController();
    const loops = receivers.map(async (r, k) => {
      while (total < N * senders.length) {
        try {
          const v = await r.receive({ signal: stop.signal });
          got[k]!.push(v);
          total++;
        } catch {
          return;
        }
      }
    });
    await Promise.all(senders.map(async (s, k) => {
      for (let i = 0; i < N; i++) await s.send({ s: k, i });
    }));
    await until(() => total === N * senders.length, 20_000, 'every value');
    stop.abort();
    await Promise.all(loops);
    const all = got.flat().map((v) => `${v.s}.${v.i}`);
    expect(new Set(all).size).to.equal(all.length);
    expect(all.length).to.equal(N * senders.length);
    expect(got.filter((g) => g.length > 0).length, 'receivers on both servers took values').to.be.greaterThan(1);
    // each receiver sees each sender's values in the order sent (a stream with one consumer, no redelivery here)
    for (const g of got) {
      for (let s = 0; s < senders.length; s++) {
        const mine = g.filter((v) => v.s === s).map((v) => v.i);
        expect(mine).to.deep.equal([...mine].sort((x, y) => x - y));
      }
    }
  });

  it('capacity: a client send waits while the stream holds capacity values, and completes once a receiver elsewhere took one', async () => {
    const { name, a, b } = await twoServers<number>(3);
    const ca = (await a.client()).channel<number>(name);
    for (let i = 0; i < 3; i++) await ca.send(i);
    const fourth = track(ca.send(3));
    await tick(300);
    expect(fourth.done, 'the fourth send waits for room').to.equal(false);
    const cb = (await b.client()).channel<number>(name);
    expect(await cb.receive()).to.equal(0);
    await until(() => fourth.done, 5000, 'the fourth send');
    expect(fourth.error).to.equal(undefined);
    expect([await cb.receive(), await cb.receive(), await cb.receive()]).to.deep.equal([1, 2, 3]);
  });

  it('close on one server reaches handles on the other: receivers drain what is left, then end; sends reject', async () => {
    const { name, a, b, sb } = await twoServers<number>(10);
    const ca = (await a.client()).channel<number>(name);
    const cb = (await b.client()).channel<number>(name);
    await ca.send(1);
    await ca.send(2);
    ca.close();
    const got: number[] = [];
    for await (const v of cb) got.push(v);
    expect(got).to.deep.equal([1, 2]);
    await until(() => sb.closed, 5000, 'the close on server b');
    const err = await rejection(sb.send(3));
    expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
    expect(err.mayHaveBeenDelivered).to.equal(false);
    expect((await rejection(b.client().then((s) => s.channel<number>(name).send(4)))).code).to.equal('ERR_CHANNEL_CLOSED');
  });

  it('a close with an error reaches the other server with its message', async () => {
    const { sa, sb } = await twoServers<number>(4);
    sa.close(new Error('no more jobs'));
    await until(() => sb.closed, 5000, 'the close on server b');
    expect(sb.closeReason?.message).to.equal('no more jobs');
    const err = await rejection(sb.receive());
    expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
    expect((err.cause as Error).message).to.equal('no more jobs');
  });

  it('a value with a channel in it is refused with ERR_NOT_SHAREABLE, on the server and from a client', async () => {
    const { name, a, sa } = await twoServers<unknown>(10);
    const local = await rejection(sa.send({ reply: new Channel(1) }));
    expect(local.code).to.equal('ERR_NOT_SHAREABLE');
    expect(local.mayHaveBeenDelivered).to.equal(false);
    const ca = (await a.client()).channel<unknown>(name);
    const remote = await rejection(ca.send({ reply: new Channel(1) }));
    expect(remote.code).to.equal('ERR_NOT_SHAREABLE');
    expect((remote as NetchanError).message).to.match(/shared channel/);
    // nothing went into the stream: the next value on a fresh handle is the first there
    const ca2 = (await a.client()).channel<unknown>(name);
    await ca2.send('plain');
    expect(await sa.receive()).to.equal('plain');
  });

  it('the NATS client is an optional peer dependency: nothing in lib/ imports it but jetstream(), at run time', () => {
    const lib = new URL('../lib/', import.meta.url);
    const files = readdirSync(lib, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
    const loaders: string[] = [];
    for (const f of files) {
      const src = readFileSync(new URL(f, lib), 'utf8');
      // a static import (other than of types) would load it with the package
      expect(/^\s*import\s+(?!type\b)[^;]*from\s*['"]@nats-io\//m.test(src), `${f} imports @nats-io statically`).to.equal(false);
      if (/\bimport\(\s*['"]@nats-io\//.test(src)) loaders.push(f);
    }
    expect(loaders).to.deep.equal([path.join('jetstream', 'jetstream.ts')]);
    const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { peerDependenciesMeta: Record<string, { optional?: boolean }>; dependencies: Record<string, string> };
    for (const name of ['@nats-io/transport-node', '@nats-io/jetstream', '@nats-io/kv']) {
      expect(pkg.peerDependenciesMeta[name]?.optional, name).to.equal(true);
      expect(pkg.dependencies[name], name).to.equal(undefined);
    }
  });

  it('a value larger than a NATS message holds is refused with ERR_VALUE_TOO_LARGE; one that fits goes', async () => {
    const { sa, sb } = await twoServers<Uint8Array>(4);
    const err = await rejection(sa.send(new Uint8Array(1024 * 1024 - 100)));
    expect(err.code).to.equal('ERR_VALUE_TOO_LARGE');
    expect(err.mayHaveBeenDelivered).to.equal(false);
    await sa.send(new Uint8Array(512 * 1024));
    expect((await sb.receive()).length).to.equal(512 * 1024);
  });

  it('capacity 0 is refused: a rendezvous cannot span servers through JetStream', async () => {
    const backend = await backendOf();
    const { server } = await startServer();
    expect(() => server.channel('zero', 0, { backend })).to.throw().with.property('code', 'ERR_INVALID_ARGUMENT');
  });

  it('the same name with another capacity on another server fails that channel with ERR_BACKEND', async () => {
    const backend = await backendOf();
    const first = backend.channel<number>(`cap.${++n}`, 5);
    await first.ready();
    const other = backend.channel<number>(first.name, 6);
    const err = await rejection(other.ready());
    expect(err.code).to.equal('ERR_BACKEND');
    expect(err.message).to.match(/capacity 5, not 6/);
  });

  it('a client that goes with values it never received gives them back: a client of the other server gets them', async () => {
    const { name, a, b } = await twoServers<number>(10);
    const sender = (await b.client()).channel<number>(name);
    const leaving = await a.client();
    const rl = leaving.channel<number>(name);
    const pending = rl.receive();
    await sender.send(1);
    expect(await pending).to.equal(1);
    // a receive given up: its demand stays with the server, which pulls 2 for this client, whose
    // program never takes it; when the session goes, 2 goes back to JetStream
    const gaveUp = new AbortController();
    const abandoned = rl.receive({ signal: gaveUp.signal }).catch((e: NetchanError) => e.code);
    await tick(50);
    gaveUp.abort();
    expect(await abandoned).to.equal('ERR_ABORTED');
    await sender.send(2);
    await tick(200);
    await leaving.close();
    const cb = (await b.client()).channel<number>(name);
    const t0 = Date.now();
    expect(await cb.receive()).to.equal(2);
    expect(Date.now() - t0, 'given back at once, not after the 2 s ack wait').to.be.lessThan(1500);
  });

  it('prefetch: a server pulls ahead of its receivers, and gives back what none of them asked for', async () => {
    const name = `prefetch.${++n}`;
    const [a, b] = [await startServer(), await startServer()];
    const sa = a.server.channel<number>(name, 20, { backend: await backendOf({ prefetch: 8 }) }) as SharedChannel<number>;
    const sb = b.server.channel<number>(name, 20, { backend: await backendOf() }) as SharedChannel<number>;
    await Promise.all([sa.ready(), sb.ready()]);
    for (let i = 0; i < 10; i++) await sb.send(i);
    const ca = (await a.client()).channel<number>(name);
    expect(await ca.receive()).to.equal(0);
    await until(() => sa.length === 8, 2000, 'server a to pull 8 ahead');
    expect(await ca.receive(), 'the next comes from what server a holds').to.equal(1);
    // no receiver of server a asks any more: the 7 it holds go back, to a receiver of server b
    const got: number[] = [];
    for (let i = 0; i < 8; i++) got.push(await sb.receive());
    expect(got.sort((x, y) => x - y)).to.deep.equal([2, 3, 4, 5, 6, 7, 8, 9]);
    expect(sa.length).to.equal(0);
  });

  it('a client send waiting for room when the channel closes rejects ERR_CHANNEL_CLOSED, and its value is not stored', async () => {
    const { name, a, sa, sb } = await twoServers<number>(1);
    const ca = (await a.client()).channel<number>(name);
    await ca.send(1);
    const waiting = ca.send(2);
    await tick(200);
    sb.close();
    const err = await rejection(waiting);
    expect(err.code).to.equal('ERR_CHANNEL_CLOSED');
    const got: number[] = [];
    for await (const v of sa) got.push(v);
    expect(got).to.deep.equal([1]);
  });

  it('a publish tried again under the same message id is stored once (the duplicate window)', async () => {
    const { sa, sb } = await twoServers<string>(4);
    const bytes = new Codec().encode('once');
    expect(await sa.publish(bytes, 'retry.1')).to.equal(undefined);
    expect(await sa.publish(bytes, 'retry.1')).to.equal(undefined);
    await sa.send('next');
    expect(await sb.receive()).to.equal('once');
    expect(await sb.receive()).to.equal('next');
  });

  it('a value JetStream gives again to the server that holds it (its ack wait ran out) stays with the receiver that has it', async () => {
    const name = `again.${++n}`;
    const { server, client } = await startServer();
    const sa = server.channel<string>(name, 4, { backend: await backendOf({ ackWaitMs: 600 }) }) as SharedChannel<string>;
    await sa.ready();
    const ca = (await client()).channel<string>(name);
    // ca asks and gives up: the server sends it 'x', which waits in ca's handle, unacknowledged
    const gaveUp = new AbortController();
    const first = ca.receive({ signal: gaveUp.signal }).catch((e: NetchanError) => e.code);
    await tick(50);
    gaveUp.abort();
    expect(await first).to.equal('ERR_ABORTED');
    await sa.send('x');
    await tick(100);
    // the server stops saying it is still working on 'x' (as when NATS is away): JetStream gives it again
    clearInterval((sa as unknown as { heartbeat: NodeJS.Timeout }).heartbeat);
    const cb = (await client()).channel<string>(name);
    const second = cb.receive();
    await tick(1500);
    await sa.send('y');
    expect(await second, 'the second receiver gets the next value, not x again').to.equal('y');
    expect(await ca.receive()).to.equal('x');
    const engine = (sa as unknown as { engine: { messages(stream: string): Promise<number> } }).engine;
    const deadline = Date.now() + 3000;
    while ((await engine.messages(sa.stream)) !== 0 && Date.now() < deadline) await tick(100);
    expect(await engine.messages(sa.stream), 'x acknowledged under its latest delivery').to.equal(0);
  });

  it('a send waiting for room ends with its signal: ERR_ABORTED, and the value never entered the stream', async () => {
    const { sa, sb } = await twoServers<number>(1);
    await sa.send(1);
    const gaveUp = new AbortController();
    const waiting = sa.send(2, { signal: gaveUp.signal });
    await tick(200);
    gaveUp.abort();
    const err = await rejection(waiting);
    expect(err.code).to.equal('ERR_ABORTED');
    expect(err.mayHaveBeenDelivered).to.equal(false);
    expect(await sb.receive()).to.equal(1);
    await sa.send(3);
    expect(await sb.receive()).to.equal(3);
  });

  it('listen/dial with a backend: two listeners share both channels; a task sent by one server is echoed by a client of the other', async () => {
    const devCertDir = await mkdtemp(path.join(tmpdir(), 'netchan-dev-certs-'));
    onTeardown(() => rm(devCertDir, { recursive: true, force: true }));
    const backend = await backendOf();
    // listen's channel names are fixed: a fresh pair for this test
    for (const name of ['netchan.out', 'netchan.in']) await backend.remove(name).catch(() => undefined);
    const one = await listen<number>('127.0.0.1:0', { devCertDir, capacity: 8, backend });
    onTeardown(() => one.close());
    const two = await listen<number>('127.0.0.1:0', { devCertDir, capacity: 8, backend: await backendOf() });
    onTeardown(() => two.close());
    const client = await dial<number>(`127.0.0.1:${two.port}`, { devCertDir });
    onTeardown(() => client.close());
    expect(client.receive.capacity, 'a shared channel is a rendezvous over the wire').to.equal(0);
    const echoing = (async () => {
      for (let i = 0; i < 5; i++) await client.send.send((await client.receive.receive()) * 10);
    })();
    for (let i = 1; i <= 5; i++) await one.send.send(i);
    const echoes: number[] = [];
    for (let i = 0; i < 5; i++) echoes.push(await (i % 2 === 0 ? one : two).receive.receive());
    await echoing;
    expect(echoes.sort((x, y) => x - y)).to.deep.equal([10, 20, 30, 40, 50]);
    for (const name of ['netchan.out', 'netchan.in']) await backend.remove(name);
  });
});
