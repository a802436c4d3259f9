/**
 * listen/dial (the seed API): work distribution, fan-in, exactly once with many clients, and
 * nothing lost when client processes are killed (SIGKILL) mid-run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { Channel, dial, listen } from '../lib/index.js';
import { parseAddress } from '../lib/cluster/cluster.js';
import { rejection } from './helpers/assert.js';
import { onTeardown, teardown, until } from './helpers/net.js';

const root = fileURLToPath(new URL('../', import.meta.url));

async function tempCertDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'netchan-dev-certs-'));
  onTeardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

describe('listen/dial', function () {
  this.timeout(60_000);
  afterEach(teardown);

  it('parses host:port, [v6]:port and URLs', () => {
    expect(parseAddress('127.0.0.1:9876').href).to.equal('https://127.0.0.1:9876/');
    expect(parseAddress('[::1]:9876').href).to.equal('https://[::1]:9876/');
    expect(parseAddress('https://example.test:8443/nc').href).to.equal('https://example.test:8443/nc');
    expect(() => parseAddress('nope')).to.throw().with.property('code', 'ERR_INVALID_ARGUMENT');
  });

  it('zero-config: listen makes a development CA once, dial on the same machine trusts it; without it dial is ERR_TLS', async () => {
    const devCertDir = await tempCertDir();
    const missing = await rejection(dial('127.0.0.1:1', { devCertDir }));
    expect(missing.code).to.equal('ERR_TLS');
    const server = await listen<string>('127.0.0.1:0', { devCertDir });
    onTeardown(() => server.close());
    const client = await dial<string>(`127.0.0.1:${server.port}`, { devCertDir });
    onTeardown(() => client.close());
    await server.send.send('task');
    expect(await client.receive.receive()).to.equal('task');
    await client.send.send('result');
    expect(await server.receive.receive()).to.equal('result');
  });

  it('20 clients echo 20,000 values: each exactly once, work spread over the clients', async () => {
    const devCertDir = await tempCertDir();
    const server = await listen<number>('127.0.0.1:0', { devCertDir, capacity: 64 });
    onTeardown(() => server.close());
    const clients = await Promise.all(Array.from({ length: 20 }, () => dial<number>(`127.0.0.1:${server.port}`, { devCertDir })));
    const perClient = clients.map(() => 0);
    clients.forEach((c, i) => {
      void (async () => {
        for await (const v of c.receive) {
          perClient[i]!++;
          await c.send.send(v);
        }
      })().catch(() => undefined);
    });
    const N = 20_000;
    void (async () => {
      for (let i = 0; i < N; i++) await server.send.send(i);
    })();
    const seen = new Uint8Array(N);
    for (let k = 0; k < N; k++) seen[await server.receive.receive()]!++;
    expect(seen.every((x) => x === 1)).to.equal(true);
    expect(perClient.reduce((a, b) => a + b, 0)).to.equal(N);
    expect(perClient.filter((n) => n > 0).length).to.be.greaterThan(10);
    for (const c of clients) await c.close();
    await until(() => server.server.stats().sessions === 0, 5000, 'sessions gone');
  });

  it('channels travel inside values through listen/dial', async () => {
    const devCertDir = await tempCertDir();
    const server = await listen<{ n: number; reply: Channel<number> }>('127.0.0.1:0', { devCertDir });
    onTeardown(() => server.close());
    const client = await dial<{ n: number; reply: Channel<number> }>(`127.0.0.1:${server.port}`, { devCertDir });
    onTeardown(() => client.close());
    void (async () => {
      for await (const { n, reply } of client.receive) await reply.send(n + 1);
    })().catch(() => undefined);
    const reply = new Channel<number>();
    await server.send.send({ n: 41, reply });
    expect(await reply.receive()).to.equal(42);
  });

  it('clients killed with SIGKILL mid-run lose no value beyond those in their programs\' hands', async () => {
    const devCertDir = await tempCertDir();
    const server = await listen<number>('127.0.0.1:0', { devCertDir, capacity: 32, sessionLeaseMs: 1000 });
    onTeardown(() => server.close());
    const held: Set<number>[] = [];
    const children: ChildProcess[] = [];
    const ready: Promise<void>[] = [];
    for (let i = 0; i < 4; i++) {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'test/fixtures/echo-client.ts')], {
        cwd: root,
        env: { ...process.env, NETCHAN_URL: `127.0.0.1:${server.port}`, NETCHAN_DEV_CERTS: devCertDir },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      onTeardown(() => {
        child.kill('SIGKILL');
      });
      children.push(child);
      const mine = new Set<number>();
      held.push(mine);
      let buffered = '';
      ready.push(
        new Promise((resolve) => {
          child.stdout!.on('data', (chunk: Buffer) => {
            buffered += chunk.toString();
            const lines = buffered.split('\n');
            buffered = lines.pop()!;
            for (const line of lines) {
              if (line === 'ready') resolve();
              else if (line.startsWith('got ')) mine.add(Number(line.slice(4)));
            }
          });
        }),
      );
    }
    await Promise.all(ready);
    const N = 6000;
    void (async () => {
      for (let i = 0; i < N; i++) await server.send.send(i);
    })().catch(() => undefined);
    const echoed = new Map<number, number>();
    const collector = (async () => {
      for (;;) {
        const v = await server.receive.receive();
        echoed.set(v, (echoed.get(v) ?? 0) + 1);
      }
    })().catch(() => undefined);
    // kill two clients while values flow to them
    await until(() => held[0]!.size > 200 && held[1]!.size > 200, 20_000, 'clients 0 and 1 busy');
    const killed = [children[0]!, children[1]!];
    for (const c of killed) c.kill('SIGKILL');
    await Promise.all(killed.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r)))));
    // every value comes back, except what a killed client had in its program's hands
    const inKilledHands = new Set([...held[0]!, ...held[1]!]);
    await until(() => {
      for (let i = 0; i < N; i++) if (!echoed.has(i) && !inKilledHands.has(i)) return false;
      return true;
    }, 30_000, 'every value echoed or held by a killed client');
    // nothing twice, unless a killed client held it (its ack may not have left: PROTOCOL §5.2)
    for (const [v, n] of echoed) if (n > 1) expect(inKilledHands.has(v), `value ${v} echoed ${n} times`).to.equal(true);
    // values the survivors received are exactly those they echoed
    const survivors = new Set([...held[2]!, ...held[3]!]);
    expect(survivors.size).to.be.greaterThan(0);
    void collector;
    await until(() => server.server.stats().sessions === 2, 10_000, 'killed sessions ended');
  });
});
