/**
 * The processes of bench/scale.ts, forked by it: `scale-peer.ts server` or `scale-peer.ts clients`.
 * Certificates come from the environment (BENCH_KEY, BENCH_CERT, BENCH_CA as PEM).
 *
 * server: `listen` on 127.0.0.1 (port 0); `mem` answers process.memoryUsage() after a forced gc;
 *   `go` sends tasks on the server's channel until `expect` distinct clients have echoed one.
 * clients: dials `count` clients (`concurrency` dials at a time); every client echoes each task it
 *   receives, tagged with its own id, then waits for the next one (idle, in `for await`).
 */
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
} else {
  console.error(`scale-peer: unknown role ${role}`);
  process.exit(2);
}
