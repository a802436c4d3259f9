/**
 * The processes of bench/scale.ts, forked by it: `scale-peer.ts server` or `scale-peer.ts clients`.
 * Certificates come from the environment (BENCH_KEY, BENCH_CERT, BENCH_CA as PEM).
 *
 * server: `listen` on 127.0.0.1 (port 0); `mem` answers process.memoryUsage() after a forced gc;
 *   `go` sends tasks on the server's channel until `expect` distinct clients have echoed one.
 * clients: dials `count` clients (`concurrency` dials at a time); every client echoes each task it
 *   receives, tagged with its own id, then waits for the next one (idle, in `for await`).
 * floor-server / floor-clients <tls|h2>: what the transport alone holds per idle connection in
 *   Node, for comparison: a bare TLS 1.3 socket, or an HTTP/2 session over TLS with
 *   BENCH_FLOOR_STREAMS open idle streams (default 2, what one netchan client has: its session
 *   stream and the pair stream of the two cluster channels).
 */
import http2 from 'node:http2';
import tls from 'node:tls';
import { dial, listen, type Dialer } from '../lib/index.js';
import { memoryAfterGc, pool, serve, tell } from './children.js';

type Task = { id: number; name: string; payload: string; ts: number; client?: number };

const key = process.env.BENCH_KEY as string;
const cert = process.env.BENCH_CERT as string;
const ca = process.env.BENCH_CA as string;
const role = process.argv[2];

if (role === 'server') {
  const capacity = Number(process.env.BENCH_CAPACITY ?? 0);
  const server = await listen<Task>('127.0.0.1:0', { key, cert, capacity });
  const replied = new Set<number>();
  let replies = 0;
  let allReplied = (): void => undefined;
  let expect = Infinity;
  void (async () => {
    for await (const echo of server.receive) {
      replies++;
      if (typeof echo.client === 'number') replied.add(echo.client);
      if (replied.size >= expect) allReplied();
    }
  })();
  serve({
    mem: () => {
      const s = server.server.stats();
      tell({ type: 'mem', mem: memoryAfterGc(), sessions: s.sessions, streams: s.streams });
    },
    go: async (m) => {
      expect = m.expect as number;
      const started = Date.now();
      const stop = new AbortController();
      const done = new Promise<void>((resolve) => {
        allReplied = resolve;
        if (replied.size >= expect) resolve();
      });
      // capacity 0: each send is a rendezvous with one client's receive, so a client that is
      // already waiting for its next task queues behind those still waiting for their first
      let sent = 0;
      const sender = (async () => {
        while (!stop.signal.aborted) {
          await server.send.send({ id: sent, name: 'task', payload: 'hello world', ts: Date.now() }, { signal: stop.signal });
          sent++;
        }
      })().catch(() => undefined);
      const deadline = new Promise<void>((resolve) => setTimeout(resolve, m.timeoutMs as number).unref());
      await Promise.race([done, deadline]);
      stop.abort();
      await sender;
      tell({ type: 'live', distinct: replied.size, replies, sent, ms: Date.now() - started });
    },
  });
  tell({ type: 'ready', port: server.port });
} else if (role === 'clients') {
  const clients: Dialer<Task>[] = [];
  const errors = new Map<string, number>();
  serve({
    dial: async (m) => {
      const { port, first, count, concurrency } = m as unknown as { port: number; first: number; count: number; concurrency: number };
      const started = Date.now();
      await pool(count, concurrency, async (i) => {
        const id = first + i;
        try {
          const c = await dial<Task>(`127.0.0.1:${port}`, { ca });
          clients.push(c);
          void (async () => {
            for await (const task of c.receive) await c.send.send({ ...task, client: id });
          })().catch(() => undefined);
        } catch (err) {
          const msg = (err as Error).message;
          errors.set(msg, (errors.get(msg) ?? 0) + 1);
        }
      });
      tell({ type: 'dialed', connected: clients.length, failed: count - clients.length, errors: [...errors], ms: Date.now() - started });
    },
    mem: () => {
      const alive = clients.filter((c) => !c.session.closed).length;
      tell({ type: 'mem', mem: memoryAfterGc(), alive });
    },
  });
  tell({ type: 'ready' });
} else if (role === 'floor-server') {
  const kind = process.argv[3];
  const held = new Set<unknown>();
  let port: number;
  if (kind === 'tls') {
    const server = tls.createServer({ key, cert, minVersion: 'TLSv1.3' }, (socket) => {
      socket.on('error', () => undefined);
      held.add(socket);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 4096, resolve));
    port = (server.address() as { port: number }).port;
  } else {
    // the settings netchan's server uses
    const server = http2.createSecureServer({ key, cert, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024, maxConcurrentStreams: 10_000 } });
    server.on('session', (session) => {
      held.add(session);
      session.once('remoteSettings', () => session.setLocalWindowSize(32 * 1024 * 1024));
    });
    server.on('stream', (stream) => {
      stream.on('error', () => undefined);
      stream.respond({ ':status': 200 });
      held.add(stream);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 4096, resolve));
    port = (server.address() as { port: number }).port;
  }
  serve({ mem: () => tell({ type: 'mem', mem: memoryAfterGc(), held: held.size }) });
  tell({ type: 'ready', port });
} else if (role === 'floor-clients') {
  const kind = process.argv[3];
  const secureContext = tls.createSecureContext({ ca, minVersion: 'TLSv1.3' });
  const held: unknown[] = [];
  const open = (port: number) =>
    new Promise<void>((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, secureContext, ALPNProtocols: kind === 'h2' ? ['h2'] : undefined });
      socket.once('error', reject);
      if (kind === 'tls') {
        socket.once('secureConnect', () => resolve());
        held.push(socket);
        return;
      }
      const session = http2.connect(`https://127.0.0.1:${port}`, { createConnection: () => socket, settings: { initialWindowSize: 1024 * 1024 } });
      session.on('error', reject);
      held.push(session);
      let answered = 0;
      const streams = Number(process.env.BENCH_FLOOR_STREAMS ?? 2);
      for (let i = 0; i < streams; i++) {
        const stream = session.request({ ':method': 'POST', ':path': '/' });
        stream.on('error', reject);
        held.push(stream);
        stream.once('response', () => ++answered === streams && resolve());
      }
    });
  serve({
    dial: async (m) => {
      const { port, count, concurrency } = m as unknown as { port: number; count: number; concurrency: number };
      let failed = 0;
      await pool(count, concurrency, () => open(port).catch(() => void failed++));
      tell({ type: 'dialed', connected: count - failed, failed, errors: [], ms: 0 });
    },
    mem: () => tell({ type: 'mem', mem: memoryAfterGc(), alive: held.length }),
  });
  tell({ type: 'ready' });
} else {
  console.error(`scale-peer: unknown role ${role}`);
  process.exit(2);
}
