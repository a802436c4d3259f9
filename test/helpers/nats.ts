/**
 * A real `nats-server -js` on loopback for the shared-channel tests: its own store directory and
 * a free port; restartable on the same store (a NATS outage), stopped on teardown. Or a cluster
 * of three (routes between them, JetStream clustered), as in production.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { acceptsConnections, freePort } from './proxies.js';

export interface Nats {
  url: string;
  port: number;
  /** Stops the server (SIGTERM, or SIGKILL) and waits for it to exit. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts it again on the same port and store. */
  start(): Promise<void>;
  /** Stops it and removes its store. */
  destroy(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** One node of a cluster: its name, its cluster port, and the cluster ports of all. */
interface Clustered {
  name: string;
  clusterPort: number;
  routes: number[];
}

export async function startNats(cluster?: Clustered): Promise<Nats> {
  const dir = await mkdtemp(path.join(tmpdir(), 'netchan-nats-'));
  const port = await freePort();
  let child: ChildProcess | null = null;
  let log = '';
  const args = ['-js', '-sd', dir, '-p', String(port), '-a', '127.0.0.1'];
  if (cluster) {
    args.push('-n', cluster.name, '--cluster_name', 'netchan-test', '--cluster', `nats://127.0.0.1:${cluster.clusterPort}`);
    args.push('--routes', cluster.routes.map((p) => `nats://127.0.0.1:${p}`).join(','));
  }
  const start = async () => {
    const c = spawn('nats-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    c.stderr?.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-4000)));
    running.add(c);
    c.once('exit', () => running.delete(c));
    child = c;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    try {
      await acceptsConnections(port, exited, 10_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${log}`);
    }
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    const c = child;
    child = null;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await exited;
  };
  await start();
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    stop,
    start,
    async destroy() {
      await stop('SIGKILL');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Three clustered nats-servers (JetStream replicated between them); `url` names all three. */
export async function startNatsCluster(): Promise<{ url: string; nodes: Nats[]; destroy(): Promise<void> }> {
  const routes = [await freePort(), await freePort(), await freePort()];
  const nodes = await Promise.all(routes.map((clusterPort, i) => startNats({ name: `n${i + 1}`, clusterPort, routes })));
  return {
    url: nodes.map((n) => n.url).join(','),
    nodes,
    async destroy() {
      await Promise.all(nodes.map((n) => n.destroy()));
    },
  };
}
