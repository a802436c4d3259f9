/**
 * Hardening: no client, hostile or unlucky, takes the server process down. The server runs in a
 * child process (test/fixtures/crash-server.ts: standalone and Express-mounted, one
 * NetchanServer), so that an abort in nghttp2 shows as that process's exit rather than as the
 * end of the test run; afterwards an honest `connect()` client must still be served.
 *
 * The chaos test is seeded: set NETCHAN_CHAOS_SEED to replay a run (the seed is printed), and
 * NETCHAN_CHAOS_ROUNDS / NETCHAN_CHAOS_MS to run it longer.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import http2 from 'node:http2';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { PassThrough } from 'node:stream';
import { expect } from 'chai';
import { Channel, connect, type ConnectOptions, type Session } from '../lib/index.js';
import { testCertificates } from './helpers/certs.js';

const repoRoot = fileURLToPath(new URL('../', import.meta.url));
const fixture = (name: string): string => path.join(repoRoot, 'test', 'fixtures', name);

interface Ports {
  standalone: number;
  express: number;
  tcp: number;
}

/** A child process and what it said; `exit` once it is gone. */
interface Child {
  process: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
  exited: Promise<void>;
}

const children = new Set<Child>();

function start(script: string, args: string[], env: Record<string, string> = {}): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', fixture(script), ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-20_000)));
  const child: Child = { process: proc, stdout: () => out, stderr: () => err, exit: null, exited: Promise.resolve() };
  child.exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      child.exit = { code, signal };
      children.delete(child);
      resolve();
    });
  });
  children.add(child);
  return child;
}

/** Resolves to the first stdout line starting with `prefix` (its rest), or fails if the child exits first. */
async function lineOf(child: Child, prefix: string, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const line = child.stdout().split('\n').find((l) => l.startsWith(prefix));
    if (line !== undefined) return line.slice(prefix.length);
    if (child.exit) throw new Error(`${child.process.spawnfile} exited (${JSON.stringify(child.exit)}) before "${prefix}":\n${child.stderr()}`);
    if (Date.now() > deadline) throw new Error(`no "${prefix}" within ${timeoutMs} ms:\n${child.stderr()}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function startServer(env: Record<string, string> = {}): Promise<{ child: Child; ports: Ports }> {
  const child = start('crash-server.ts', [], env);
  const ports = JSON.parse(await lineOf(child, 'ready ', 30_000)) as Ports;
  return { child, ports };
}

function expectAlive(server: Child): void {
  expect(server.exit, `the server process exited; its stderr:\n${server.stderr()}`).to.equal(null);
}

async function ca(): Promise<string> {
  return (await testCertificates()).caCert;
}

const MOUNTS = [
  { name: 'standalone', port: (p: Ports) => p.standalone, path: '/' },
  { name: 'Express', port: (p: Ports) => p.express, path: '/netchan' },
] as const;

type Mount = (typeof MOUNTS)[number];

const urlOf = (ports: Ports, mount: Mount): string => `https://localhost:${mount.port(ports)}${mount.path}`;

/** An honest client: connects, and asks `stats` (a request/reply through netchan). */
async function honest(ports: Ports, mount: Mount, options: ConnectOptions = {}): Promise<{ session: Session; stats(): Promise<{ maxLagMs: number; sessions: number }> }> {
  // patient: the regression tests stall the server on purpose
  const session = await connect(urlOf(ports, mount), { ca: await ca(), transport: 'h2', idleTimeoutMs: 10_000, ...options });
  const remote = session.channel('honest-stats');
  const stats = async (): Promise<{ maxLagMs: number; sessions: number }> => {
    const reply = new Channel<{ maxLagMs: number; sessions: number }>(1);
    await remote.send({ reply });
    const answer = await reply.receive();
    reply.close();
    return answer;
  };
  return { session, stats };
}

/** Asks until the server has `n` sessions (the honest one included), at most `timeoutMs`. */
async function untilSessions(client: { stats(): Promise<{ sessions: number }> }, n: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  while (Date.now() < deadline) {
    last = (await client.stats()).sessions;
    if (last === n) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`the server has ${last} sessions, not ${n}, after ${timeoutMs} ms`);
}

const echoHandles = new WeakMap<Session, ReturnType<Session['channel']>>();

/** One echo through the server: request/reply works. */
async function echoes(session: Session, value: number): Promise<void> {
  let remote = echoHandles.get(session);
  if (!remote) echoHandles.set(session, (remote = session.channel('honest-echo')));
  const reply = new Channel<number>(1);
  await remote.send({ reply, value });
  expect(await reply.receive()).to.equal(value);
  reply.close();
}

/** `promise`, or a failure naming `what` after `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>, server?: Child): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      // no answer because the server died (an abort in nghttp2 shows only in its stderr), or it did not
      const died = server?.exit ? `; the server process exited (${JSON.stringify(server.exit)}), its stderr:\n${server.stderr()}` : server ? '; the server process is alive' : '';
      reject(new Error(`${what}: no answer within ${ms} ms${died}`));
    }, ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw HTTP/2 connection (its TLS socket kept: Node forbids destroying it through the session). */
async function rawConnection(port: number, settings: http2.Settings = {}): Promise<{ h2: http2.ClientHttp2Session; socket: tls.TLSSocket }> {
  const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: await ca(), ALPNProtocols: ['h2'] });
  socket.on('error', () => undefined);
  const h2 = http2.connect(`https://localhost:${port}`, { createConnection: () => socket, settings });
  h2.on('error', () => undefined);
  return { h2, socket };
}

function rawRequest(h2: http2.ClientHttp2Session, headers: Record<string, string>): Promise<{ stream: http2.ClientHttp2Stream; headers: http2.IncomingHttpHeaders }> {
  const stream = h2.request({ ':method': 'POST', 'netchan-version': '1', ...headers }, { endStream: false });
  stream.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    stream.once('response', (h) => resolve({ stream, headers: h }));
    stream.once('close', () => reject(new Error('stream closed before its answer')));
  });
}

after(async () => {
  for (const child of [...children]) {
    child.process.kill('SIGKILL');
    await child.exited;
  }
});

describe('hardening: remote crash', function () {
  this.timeout(60_000);

  describe('regressions', () => {
    // a server of its own for each: one that aborts takes no other test with it
    let server: { child: Child; ports: Ports };
    beforeEach(async () => {
      server = await startServer();
    });
    afterEach(async () => {
      server.child.process.kill('SIGKILL');
      await server.child.exited;
    });

    for (const mount of MOUNTS) {
      for (const how of ['session.destroy()', 'socket destroy'] as const) {
        it(`regression: a byte-stream export no value claims, then a destroyed HTTP/2 session, does not abort the server (standalone and Express): ${mount.name}, ${how}`, async () => {
          const client = await honest(server.ports, mount);
          try {
            await untilSessions(client, 1);
            for (const mode of ['r', 'w', 'd']) {
              const { h2, socket } = await rawConnection(mount.port(server.ports));
              const control = await rawRequest(h2, { ':path': mount.path, 'netchan-kind': 'session' });
              const sid = String(control.headers['netchan-session']);
              const bytes = await rawRequest(h2, { ':path': mount.path, 'netchan-kind': 'bytes', 'netchan-session': sid, 'netchan-stream': 'b1', 'netchan-export': 'b1', 'netchan-mode': mode });
              expect(bytes.headers[':status']).to.equal(200);
              await untilSessions(client, 2);
              // from a turn of its own: this client is not what is under test
              await nextTurn();
              if (how === 'session.destroy()') h2.destroy();
              else socket.destroy();
              await untilSessions(client, 1);
              expectAlive(server.child);
            }
            await echoes(client.session, 7);
          } finally {
            await client.session.close();
          }
          expectAlive(server.child);
        });
      }
    }

    for (const mount of MOUNTS) {
      it(`regression: a send refused with ERR_VALUE_TOO_LARGE leaves its byte-stream export open; the heartbeat timeout that then ends the session does not abort the server: ${mount.name}`, async () => {
        const client = await honest(server.ports, mount);
        try {
          await untilSessions(client, 1);
          for (const reconnect of [false, true]) {
            for (const silence of ['first heartbeat', 'stalled server'] as const) {
              // 'first heartbeat': a client that gives up on the server at its first heartbeat
              // (500 ms); 'stalled server': one that gives up on a server silent for 150 ms
              const timing = silence === 'first heartbeat' ? { heartbeatIntervalMs: 500, idleTimeoutMs: 1 } : { heartbeatIntervalMs: 50, idleTimeoutMs: 150 };
              const victim = await connect(urlOf(server.ports, mount), { ca: await ca(), transport: 'h2', reconnect, ...timing });
              // resumable, the timeout suspends the session (and a lost resumption ends it)
              const gaveUp = new Promise<{ code?: string }>((resolve) => victim.once(reconnect ? 'disconnect' : 'close', resolve));
              // a source that does not end: its export stays open on the server
              const err = await victim
                .channel('sink')
                .send({ bytes: new PassThrough(), pad: Buffer.alloc(70_000) })
                .then(
                  () => undefined,
                  (e: unknown) => e as { code?: string },
                );
              expect(err?.code).to.equal('ERR_VALUE_TOO_LARGE');
              // no PONG for the victim while the server is blocked: the server reads the
              // victim's resets once it is back
              if (silence === 'stalled server') victim.channel('stall').send({ ms: 600 }).catch(() => undefined);
              expect((await gaveUp).code).to.equal('ERR_TIMEOUT');
              await victim.close();
              await untilSessions(client, 1);
              expectAlive(server.child);
            }
          }
          await echoes(client.session, 8);
        } finally {
          await client.session.close();
        }
        expectAlive(server.child);
      });
    }

    it('regression: the server\'s own heartbeat timeout ends a session with an unclaimed byte-stream export without aborting (standalone and Express)', async () => {
      for (const mount of MOUNTS) {
        const client = await honest(server.ports, mount);
        try {
          await untilSessions(client, 1);
          const { h2 } = await rawConnection(mount.port(server.ports));
          const control = await rawRequest(h2, { ':path': mount.path, 'netchan-kind': 'session' });
          const sid = String(control.headers['netchan-session']);
          await rawRequest(h2, { ':path': mount.path, 'netchan-kind': 'bytes', 'netchan-session': sid, 'netchan-stream': 'b1', 'netchan-export': 'b1', 'netchan-mode': 'd' });
          // never a PING: the server's idle timeout (1500 ms here) ends the session
          await untilSessions(client, 2);
          await untilSessions(client, 1, 10_000);
          await nextTurn();
          h2.destroy();
          await echoes(client.session, 9);
        } finally {
          await client.session.close();
        }
        expectAlive(server.child);
      }
    });

    describe('streams Node frees while nghttp2 keeps them', () => {
      for (const mount of MOUNTS) {
        it(`regression: a refused stream whose answer waits on a 16-byte window, reset again when its session ends, then given window, does not freeze the server: ${mount.name}`, async () => {
          const client = await honest(server.ports, mount);
          const other = await honest(server.ports, mount);
          try {
            await untilSessions(client, 2);
            // the refusal's text is longer than the window: its END_STREAM waits for a WINDOW_UPDATE
            const { h2 } = await rawConnection(mount.port(server.ports), { initialWindowSize: 16 });
            const control = await rawRequest(h2, { ':path': mount.path, 'netchan-kind': 'session' });
            const sid = String(control.headers['netchan-session']);
            const refused = await rawRequest(h2, { ':path': mount.path, 'netchan-kind': 'tcp', 'netchan-session': sid, 'netchan-stream': 'c1', 'netchan-target': 'nonsense' });
            expect(refused.headers[':status']).to.equal(400);
            const ended = new Promise<number>((resolve) => refused.stream.once('close', () => resolve(refused.stream.rstCode)));
            // never a PING: the server's idle timeout ends the session, which resets its streams
            await untilSessions(client, 3);
            await untilSessions(client, 2, 10_000);
            // reading gives the refused stream window again, if it is still open
            refused.stream.resume();
            await within(5_000, 'echo after the WINDOW_UPDATE', echoes(client.session, 10), server.child);
            await within(5_000, 'echo of another session', echoes(other.session, 11), server.child);
            // reset by its session (CANCEL), not left open
            expect(await within(5_000, 'the refused stream to close', ended, server.child)).to.equal(http2.constants.NGHTTP2_CANCEL);
            h2.destroy();
          } finally {
            // a frozen server answers no close: what failed above is the failure to report
            await within(5_000, 'the honest sessions to close', Promise.all([client.session.close(), other.session.close()])).catch(() => undefined);
          }
          expectAlive(server.child);
        });
      }
    });
  });

  describe('chaos', () => {
    it('a seeded hostile client (thousands of rounds of streams of every kind, partial frames, resets, destroyed sessions) leaves the server alive, responsive and serving', async () => {
      const seed = Number(process.env.NETCHAN_CHAOS_SEED ?? randomInt(2 ** 31));
      const rounds = Number(process.env.NETCHAN_CHAOS_ROUNDS ?? 4000);
      const ms = Number(process.env.NETCHAN_CHAOS_MS ?? 12_000);
      // the seed, to replay a failing run with NETCHAN_CHAOS_SEED
      console.log(`      chaos seed ${seed} (rounds ${rounds}, at most ${ms} ms)`);
      const server = await startServer();
      try {
        const client = await honest(server.ports, MOUNTS[0]);
        const viaExpress = await honest(server.ports, MOUNTS[1]);
        const before = await client.stats();
        const chaos = start('crash-chaos.ts', [JSON.stringify({ seed, rounds, ms, ...server.ports, ca: path.join(repoRoot, 'certs', 'test', 'ca.pem') })]);
        // while it runs, the honest clients keep being answered
        let worstRoundTripMs = 0;
        let served = 0;
        while (!chaos.exit && served < 10_000) {
          const t0 = Date.now();
          await within(10_000, `honest echo ${served} during the chaos`, echoes(served % 2 === 0 ? client.session : viaExpress.session, served), server.child);
          worstRoundTripMs = Math.max(worstRoundTripMs, Date.now() - t0);
          served++;
          expectAlive(server.child);
          await new Promise((r) => setTimeout(r, 50));
        }
        await within(20_000, 'the chaos client to exit', chaos.exited);
        const summary = JSON.parse(await lineOf(chaos, 'done ', 0)) as { rounds: number; elapsedMs: number; counts: Record<string, number> };
        console.log(`      chaos ran ${summary.rounds} rounds in ${summary.elapsedMs} ms; ${served} honest round trips meanwhile, the slowest ${worstRoundTripMs} ms`);
        expect(chaos.exit, `the chaos client failed:\n${chaos.stderr()}`).to.deep.equal({ code: 0, signal: null });
        expect(summary.rounds).to.be.at.least(Math.min(rounds, 1000));
        expectAlive(server.child);
        // still serving: request/reply on the sessions that lived through it, and on new ones
        await within(10_000, 'echo after the chaos (standalone)', echoes(client.session, 1), server.child);
        await within(10_000, 'echo after the chaos (Express)', echoes(viaExpress.session, 2), server.child);
        for (const mount of MOUNTS) {
          for (const transport of ['h2', 'ws'] as const) {
            const fresh = await within(10_000, `connect after the chaos (${mount.name}, ${transport})`, connect(urlOf(server.ports, mount), { ca: await ca(), transport }), server.child);
            await within(10_000, `echo of a new session after the chaos (${mount.name}, ${transport})`, echoes(fresh, 3), server.child);
            await fresh.close();
          }
        }
        // and its event loop stayed responsive
        const after = await within(10_000, 'stats after the chaos', client.stats(), server.child);
        expect(after.maxLagMs, 'worst event-loop delay in the server, ms').to.be.below(1000);
        expect(worstRoundTripMs, 'slowest honest request/reply during the chaos, ms').to.be.below(5000);
        expect(before.sessions).to.equal(2);
        await client.session.close();
        await viaExpress.session.close();
        expectAlive(server.child);
      } finally {
        server.child.process.kill('SIGKILL');
        await server.child.exited;
      }
    });
  });
});
