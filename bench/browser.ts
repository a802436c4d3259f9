/**
 * netchan in a web page against a raw WebSocket in the same page, to the same server (Express on
 * HTTP/2 + TLS, Debian's Chromium driven by playwright-core), run alternately:
 * - echo: the page sends N small values and takes N back (netchan: into a server channel whose
 *   program sends each into another one the page receives from, capacity 128 both; raw: one
 *   WebSocket message per value, each echoed by the server, no flow control);
 * - request/reply: one at a time (netchan: `send` then `receive` on capacity-0 channels, the
 *   reply handle with `prefetch: 1`; raw: ping/pong).
 *
 *   npm run bench:browser        (BENCH_MESSAGES, BENCH_ROUNDTRIPS, BENCH_RUNS)
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, rm } from 'node:fs/promises';
import express from 'express';
import { chromium } from 'playwright-core';
import { WebSocketServer } from 'ws';
import { buildBrowser } from '../bin/build-browser.js';
import { createServer, devCertificateDir } from '../lib/index.js';
import { ensureDevCertificates } from '../lib/transport/devcert.js';
import { attach, netchan } from '../middleware/express.js';
import { ratioRow, summarize } from './summary.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 50_000);
const ROUNDTRIPS = Number(process.env.BENCH_ROUNDTRIPS ?? 2_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

const dev = await ensureDevCertificates(devCertificateDir());
const bundles = await mkdtemp(path.join(os.tmpdir(), 'netchan-bench-browser-'));
await buildBrowser(bundles);

const server = createServer();
const input = server.channel<number>('in', 128);
const output = server.channel<number>('out', 128);
const req = server.channel<number>('req', 0);
const rep = server.channel<number>('rep', 0);
void (async () => {
  for await (const v of input) await output.send(v);
})();
void (async () => {
  for await (const v of req) await rep.send(v);
})();

const app = express();
app.get('/', (_req, res) => res.type('html').send('<!doctype html><script type="module">import * as n from "/netchan.js"; window.netchan = n; window.ready = true;</script>'));
app.get('/netchan.js', (_req, res) => res.sendFile(path.join(bundles, 'netchan.js')));
app.use('/netchan', netchan(server));
const web = http2.createSecureServer({ key: dev.key, cert: dev.cert, allowHTTP1: true, minVersion: 'TLSv1.3' });
web.on('request', app as never);
attach(web, app);
// the raw peer: a WebSocket on /raw of the same server that echoes every message
const raw = new WebSocketServer({ noServer: true, perMessageDeflate: false });
web.prependListener('upgrade', (request, socket: Duplex, head: Buffer) => {
  if (request.url !== '/raw') return;
  raw.handleUpgrade(request, socket, head, (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
});
// `attach` routes every upgrade through the app: leave /raw to the raw peer
app.use('/raw', () => undefined);
await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
const origin = `https://127.0.0.1:${(web.address() as { port: number }).port}`;

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'] });
const context = await browser.newContext({ ignoreHTTPSErrors: true });
await context.addInitScript('window.__name = (f) => f');
const page = await context.newPage();
await page.goto(`${origin}/`);
await page.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true);

type Page = { netchan: typeof import('../lib/browser/index.js') };

/** netchan's figures: echo msg/s and request/reply µs, from one page session. */
function netchanRun(messages: number, roundtrips: number): Promise<{ echo: number; rr: number }> {
  return page.evaluate(
    async ({ messages, roundtrips }) => {
      const session = await (window as unknown as Page).netchan.connect('/netchan');
      const ins = session.channel<number>('in');
      const outs = session.channel<number>('out');
      let t = performance.now();
      const sending = (async () => {
        for (let i = 0; i < messages; i++) await ins.send(i);
      })();
      for (let i = 0; i < messages; i++) if ((await outs.receive()) !== i) throw new Error(`echo out of order at ${i}`);
      await sending;
      const echo = messages / ((performance.now() - t) / 1000);
      const reqs = session.channel<number>('req');
      const reps = session.channel<number>('rep', { prefetch: 1 });
      t = performance.now();
      for (let i = 0; i < roundtrips; i++) {
        await reqs.send(i);
        if ((await reps.receive()) !== i) throw new Error('reply out of order');
      }
      const rr = ((performance.now() - t) * 1000) / roundtrips;
      await session.close();
      return { echo, rr };
    },
    { messages, roundtrips },
  );
}

/** The raw WebSocket's figures, the same workloads with small binary messages. */
function rawRun(messages: number, roundtrips: number): Promise<{ echo: number; rr: number }> {
  return page.evaluate(
    async ({ messages, roundtrips, url }) => {
      const ws = new WebSocket(url);
      ws.binaryType = 'arraybuffer';
      await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = j)));
      let got = 0;
      let done: () => void = () => undefined;
      ws.onmessage = () => {
        if (++got === target) done();
      };
      let target = messages;
      let t = performance.now();
      const all = new Promise<void>((r) => (done = r));
      for (let i = 0; i < messages; i++) ws.send(new Float64Array([i]));
      await all;
      const echo = messages / ((performance.now() - t) / 1000);
      t = performance.now();
      for (let i = 0; i < roundtrips; i++) {
        got = 0;
        target = 1;
        const one = new Promise<void>((r) => (done = r));
        ws.send(new Float64Array([i]));
        await one;
      }
      const rr = ((performance.now() - t) * 1000) / roundtrips;
      ws.close();
      return { echo, rr };
    },
    { messages, roundtrips, url: `${origin.replace('https:', 'wss:')}/raw` },
  );
}

const results: { netchan: { echo: number; rr: number }[]; raw: { echo: number; rr: number }[] } = { netchan: [], raw: [] };
await netchanRun(Math.min(MESSAGES, 5000), 200); // warm-up
await rawRun(Math.min(MESSAGES, 5000), 200);
for (let run = 0; run < RUNS; run++) {
  results.netchan.push(await netchanRun(MESSAGES, ROUNDTRIPS));
  results.raw.push(await rawRun(MESSAGES, ROUNDTRIPS));
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const fmt = (xs: number[], unit: string, digits = 0): string => `${median(xs).toLocaleString('en', { maximumFractionDigits: digits })} ${unit} (${xs.map((x) => x.toLocaleString('en', { maximumFractionDigits: digits })).join(', ')})`;
console.log(`Chromium ${browser.version()}, Node ${process.version}, ${os.cpus().length} cores; ${MESSAGES} values echoed, ${ROUNDTRIPS} round trips, ${RUNS} runs alternating (median, then each run)`);
console.log(`| workload | netchan/browser | raw WebSocket | ratio |`);
console.log(`|---|---|---|---|`);
const echoN = results.netchan.map((r) => r.echo), echoR = results.raw.map((r) => r.echo);
const rrN = results.netchan.map((r) => r.rr), rrR = results.raw.map((r) => r.rr);
console.log(`| echo, msg/s | ${fmt(echoN, 'msg/s')} | ${fmt(echoR, 'msg/s')} | ${(median(echoN) / median(echoR)).toFixed(2)} × |`);
console.log(`| request/reply, µs | ${fmt(rrN, 'µs')} | ${fmt(rrR, 'µs')} | ${(median(rrN) / median(rrR)).toFixed(2)} × |`);
summarize([
  ratioRow('browser echo, msg/s', median(echoN), { label: 'raw WebSocket', value: median(echoR) }, (n) => Math.round(n).toLocaleString('en')),
  ratioRow('browser request/reply, µs', median(rrN), { label: 'raw WebSocket', value: median(rrR) }, (n) => n.toFixed(0)),
]);

await browser.close();
await server.close();
web.close();
raw.close();
await rm(bundles, { recursive: true, force: true });
process.exit(0);
