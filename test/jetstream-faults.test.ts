/**
 * Shared channels under faults, every piece its own process: a real nats-server and netchan
 * servers (test/fixtures/shared-server.ts) on loopback, clients here. A netchan server SIGKILLed
 * mid-run loses no value: those it held for its clients go to the others after the ack wait, and
 * the only values seen twice are ones its clients' programs already had. A nats-server restart is
 * waited out: sends wait and resume, every value arrives once, in order. On a NATS cluster of
 * three with replicated streams, the node leading the channel's stream dies and nothing is lost.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { SharedChannel, connect, type NetchanError, type RemoteChannel } from '../lib/index.js';
import { testCertificates } from './helpers/certs.js';
import { startNats, startNatsCluster, type Nats } from './helpers/nats.js';
import { onTeardown, teardown, tick, until } from './helpers/net.js';

const root = fileURLToPath(new URL('../', import.meta.url));
let nats: Nats;
let n = 0;

interface Child {
  port: number;
  kill(): void;
}

async function sharedServer(name: string, env: Record<string, string> = {}, natsUrl = nats.url): Promise<Child> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/fixtures/shared-server.ts')], {
    cwd: root,
    env: { ...process.env, NATS_URL: natsUrl, SHARED_NAME: name, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  onTeardown(() => {
    child.kill('SIGKILL');
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`shared server exited with ${code}`)));
  });
  return { port, kill: () => child.kill('SIGKILL') };
}

async function handle<T>(port: number, name: string): Promise<RemoteChannel<T>> {
  const certs = await testCertificates();
  const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert });
  onTeardown(() => session.close().catch(() => undefined));
  return session.channel<T>(name);
}

/** Values sent one way in the restart and leader tests. */
const EXCHANGED = 300;

/** Sends EXCHANGED values from `sender` to `receiver`, and takes them there in `got`. */
function exchange(sender: RemoteChannel<number>, receiver: RemoteChannel<number>): { sender: RemoteChannel<number>; receiver: RemoteChannel<number>; got: number[]; done: Promise<unknown> } {
  const got: number[] = [];
  const receiving = (async () => {
    while (got.length < EXCHANGED) got.push(await receiver.receive());
  })();
  const sending = (async () => {
    for (let i = 0; i < EXCHANGED; i++) await sender.send(i);
  })();
  return { sender, receiver, got, done: Promise.all([sending, receiving]) };
}

/**
 * Every value once; in order but for a value JetStream delivered while NATS (or the stream's
 * leader) went down, which never reached the server and comes again after the ack wait, after
 * later ones.
 */
function onceInOrder(got: number[]): void {
  expect([...got].sort((a, b) => a - b)).to.deep.equal(Array.from({ length: EXCHANGED }, (_, i) => i));
  const late = got.filter((v, i) => got.slice(0, i).some((w) => w > v));
  expect(late.length, `values after later ones: ${late.join(' ')}`).to.be.at.most(2);
  const rest = got.filter((v) => !late.includes(v));
  expect(rest, 'the others in order').to.deep.equal([...rest].sort((a, b) => a - b));
}

/** Receives into `into` (tagged with `via`) until `stop` fires or the handle fails. */
async function receiveLoop<T>(ch: RemoteChannel<T>, via: number, into: { value: T; via: number }[], stop: AbortSignal): Promise<void> {
  for (;;) {
    try {
      into.push({ value: await ch.receive({ signal: stop }), via });
    } catch {
      return;
    }
  }
}

describe('shared channels on JetStream, under faults', function () {
  this.timeout(60_000);
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await nats?.destroy();
  });
  afterEach(teardown);

  it('a netchan server SIGKILLed mid-run: every value sent arrives; none twice but what its clients\' programs already had', async () => {
    const name = `faults.${++n}`;
    // the dying server also pulls values ahead of its receivers: those come back too
    const servers = [await sharedServer(name), await sharedServer(name), await sharedServer(name, { PREFETCH: '4' })];
    const N = 400;
    const stop = new AbortController();
    const got: { value: string; via: number }[] = [];
    const receivers = await Promise.all([0, 1, 2, 2].map(async (s) => ({ s, ch: await handle<string>(servers[s]!.port, name) })));
    const loops = receivers.map(({ s, ch }) => receiveLoop(ch, s, got, stop.signal));
    // one sender on a server that lives, one on the server that dies
    const survivor = await handle<string>(servers[0]!.port, name);
    const doomed = await handle<string>(servers[2]!.port, name);
    const sent = new Set<string>();
    const maybe = new Set<string>();
    const sending = [
      (async () => {
        for (let i = 0; i < N; i++) {
          await survivor.send(`a${i}`);
          sent.add(`a${i}`);
        }
      })(),
      (async () => {
        for (let i = 0; i < N; i++) {
          try {
            await doomed.send(`d${i}`);
            sent.add(`d${i}`);
          } catch (err) {
            if ((err as NetchanError).mayHaveBeenDelivered !== false) maybe.add(`d${i}`);
            return;
          }
        }
      })(),
    ];
    await until(() => got.filter((g) => g.via === 2).length >= 40, 20_000, 'the doomed server\'s clients to take values');
    // clients of the doomed server ask for a value each and give up: their server pulls one for
    // each and sends it, and it waits in the client, unacknowledged, when the server dies
    for (let i = 0; i < 3; i++) {
      const hoarder = await handle<string>(servers[2]!.port, name);
      const gaveUp = new AbortController();
      const r = hoarder.receive({ signal: gaveUp.signal }).then(
        (value) => void got.push({ value, via: 2 }), // it came before the abort: the program has it
        () => undefined,
      );
      await tick(30);
      gaveUp.abort();
      await r;
    }
    await tick(100);
    servers[2]!.kill();
    await Promise.all(sending);
    expect(sent.size, 'the survivor sent everything').to.be.at.least(N);
    const missing = () => [...sent].filter((v) => !got.some((g) => g.value === v));
    await until(() => missing().length === 0, 30_000, 'every value sent').catch((err: Error) => {
      throw new Error(`${err.message}: ${missing().length} missing (${missing().slice(0, 10).join(' ')}), ${got.length} received`);
    });
    // values the dead server held in flight would come back after the 2 s ack wait: wait them out
    await tick(3000);
    stop.abort();
    await Promise.all(loops);
    const seen = new Map<string, number[]>();
    for (const g of got) seen.set(g.value, [...(seen.get(g.value) ?? []), g.via]);
    for (const [value, vias] of seen) {
      expect(sent.has(value) || maybe.has(value), `${value} was sent`).to.equal(true);
      if (vias.length > 1) {
        expect(vias.length, `${value} at most twice`).to.equal(2);
        expect(vias, `${value} twice: once through the dead server, whose ack never went out`).to.include(2);
      }
    }
    const twice = [...seen.values()].filter((v) => v.length > 1).length;
    expect(twice, 'values seen twice').to.be.at.most(2);
    expect(got.filter((g) => g.via !== 2).length, 'the survivors took the rest').to.be.greaterThan(0);
  });

  it('a nats-server restart mid-run is waited out: sends wait and resume, every value arrives once, in order but for one in flight at the restart, close still propagates', async () => {
    const name = `restart.${++n}`;
    const env = { ACK_WAIT_MS: '8000' };
    const servers = [await sharedServer(name, env), await sharedServer(name, env)];
    const { sender, receiver, got, done } = exchange(await handle<number>(servers[0]!.port, name), await handle<number>(servers[1]!.port, name));
    await until(() => got.length >= 60, 20_000, 'values before the restart');
    await nats.stop('SIGTERM');
    const during = got.length;
    await tick(1000);
    expect(got.length, 'nothing moves while NATS is down').to.be.at.most(during + 1);
    await nats.start();
    await done;
    onceInOrder(got);
    // the close watch came back with NATS: a close on one server still ends the other's receiver
    sender.close();
    const ended = await receiver.receive().then(
      () => 'a value',
      (e: NetchanError) => e.code,
    );
    expect(ended).to.equal('ERR_CHANNEL_CLOSED');
  });

  it('on a NATS cluster of three with replicas 3: the node leading the stream SIGKILLed mid-run loses nothing, every value arrives once, in order but for one in flight', async () => {
    const cluster = await startNatsCluster();
    onTeardown(() => cluster.destroy());
    const name = `replicated.${++n}`;
    // the first stream waits for the cluster's JetStream to elect its leader
    const env = { ACK_WAIT_MS: '10000', REPLICAS: '3' };
    const servers = [await sharedServer(name, env, cluster.url), await sharedServer(name, env, cluster.url)];
    const { got, done } = exchange(await handle<number>(servers[0]!.port, name), await handle<number>(servers[1]!.port, name));
    await until(() => got.length >= 60, 20_000, 'values before the node dies');
    // the node that leads the channel's stream (Raft) dies: another takes over
    const { connect: natsConnect } = await import('@nats-io/transport-node');
    const { jetstreamManager } = await import('@nats-io/jetstream');
    const nc = await natsConnect({ servers: cluster.url.split(',') });
    const info = await (await jetstreamManager(nc)).streams.info(SharedChannel.names(name).stream);
    await nc.close();
    const leader = Number(/^n(\d)$/.exec(info.cluster?.leader ?? '')?.[1]);
    expect(leader, `stream leader ${info.cluster?.leader}`).to.be.within(1, 3);
    expect(info.cluster?.replicas?.length, 'two replicas besides the leader').to.equal(2);
    await cluster.nodes[leader - 1]!.stop('SIGKILL');
    await done;
    onceInOrder(got);
  });
});
