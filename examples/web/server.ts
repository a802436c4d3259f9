/**
 * The live demo page: an Express app with netchan mounted, serving a page where the cluster demo
 * runs in the browser. The server sends numbered tasks into `tasks`; each of the page's client
 * sessions takes tasks and sends results back into `results`; the server counts what came back,
 * what is in flight and what was lost or duplicated, and streams those figures to the page on
 * `stats`. The page's button asks the server (on `control`) to cut every connection: the sessions
 * resume and nothing is lost.
 *
 *   npm run demo:web              # then open the printed https://localhost:… URL
 *   npm run demo:web -- --port 8443
 */
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import express from 'express';
import { buildBrowser } from '../../bin/build-browser.js';
import { createServer, devCertificateDir, type NetchanServer } from '../../lib/index.js';
import { ensureDevCertificates } from '../../lib/transport/devcert.js';
import { attach, netchan } from '../../middleware/express.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** What the page shows, sent on `stats` four times a second. */
export interface DemoStats {
  clients: number;
  sent: number;
  received: number;
  inFlight: number;
  /** Results that came back twice. */
  duplicated: number;
  /** Tasks whose result is more than 10 s late. */
  lost: number;
  /** Results per second over the last second. */
  rate: number;
  cuts: number;
}

export interface Demo {
  url: string;
  port: number;
  server: NetchanServer;
  stats(): DemoStats;
  close(): Promise<void>;
}

/** Starts the demo app on `port` (0: a free one), on loopback, with the development certificate. */
export async function startDemo(port = 0): Promise<Demo> {
  const dev = await ensureDevCertificates(devCertificateDir());
  const bundles = await mkdtemp(path.join(os.tmpdir(), 'netchan-demo-web-'));
  await buildBrowser(bundles, path.join(here, 'page.ts'));

  const server = createServer();
  const tasks = server.channel<number>('tasks', 128);
  const results = server.channel<number>('results', 128);
  const stats = server.channel<DemoStats>('stats', 1);
  const control = server.channel<string>('control', 1);
  const sockets = new Set<Socket>();
  const outstanding = new Map<number, number>(); // task → when it was sent
  const counts = { sent: 0, received: 0, duplicated: 0, cuts: 0 };
  const recent: number[] = [];
  let running = true;

  void (async () => {
    for (let n = 0; running; n++) {
      try {
        await tasks.send(n);
      } catch {
        return; // closed
      }
      outstanding.set(n, Date.now());
      counts.sent++;
    }
  })();
  void (async () => {
    for await (const n of results) {
      if (!outstanding.delete(n)) counts.duplicated++;
      else counts.received++;
      recent.push(Date.now());
    }
  })();
  void (async () => {
    for await (const what of control) {
      if (what !== 'cut') continue;
      counts.cuts++;
      for (const s of sockets) s.destroy();
    }
  })();
  const current = (): DemoStats => {
    const now = Date.now();
    while (recent.length > 0 && (recent[0] as number) < now - 1000) recent.shift();
    let lost = 0;
    for (const at of outstanding.values()) if (at < now - 10_000) lost++;
    const clients = Math.max(0, server.stats().sessions - 1); // one session of the page watches
    return { clients, ...counts, inFlight: outstanding.size, lost, rate: recent.length };
  };
  const ticker = setInterval(() => stats.trySend(current()) || undefined, 250);

  const app = express();
  app.get('/', (_req, res) => res.sendFile(path.join(here, 'index.html')));
  app.get('/page.js', (_req, res) => res.sendFile(path.join(bundles, 'page.js')));
  app.use('/netchan', netchan(server));
  const web = http2.createSecureServer({ key: dev.key, cert: dev.cert, allowHTTP1: true, minVersion: 'TLSv1.3' });
  web.on('request', app as never);
  attach(web, app);
  web.on('secureConnection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => web.listen(port, '127.0.0.1', resolve));
  const bound = (web.address() as { port: number }).port;
  return {
    url: `https://localhost:${bound}/`,
    port: bound,
    server,
    stats: current,
    close: async () => {
      running = false;
      clearInterval(ticker);
      await server.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => web.close(() => resolve()));
    },
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '0' } } });
  const demo = await startDemo(Number(values.port));
  console.log(`netchan web demo: ${demo.url}`);
  console.log(`(TLS with the development CA: trust ${path.join(devCertificateDir(), 'ca.pem')} in the browser, or accept its warning)`);
  console.log('Ctrl-C stops it.');
  process.on('SIGINT', () => void demo.close().then(() => process.exit(0)));
}
