/**
 * Real Chromium for the browser tests: Debian's `/usr/bin/chromium` driven by playwright-core
 * (no browser download), and an Express app on HTTP/2 + TLS with netchan mounted, serving a
 * page that loads the `netchan/browser` bundle (built by bin/build-browser.ts, as users get it).
 */
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type NextFunction, type Request, type Response } from 'express';
import { chromium, type Browser } from 'playwright-core';
import { buildBrowser } from '../../bin/build-browser.js';
import { createServer, type NetchanServer, type ServerOptions } from '../../lib/index.js';
import { attach, netchan } from '../../middleware/express.js';
import { testCertificates } from './certs.js';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Chromium's flags for tests: headless, no sandbox (root in CI), nothing fetched from the network. */
export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 30_000 });
}

/** The bundles a test page loads: netchan.js (the package's) and vectors.js (the test vectors' runner). */
export async function buildPageBundles(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'netchan-browser-'));
  await buildBrowser(dir);
  await buildBrowser(dir, path.join(here, '..', 'browser', 'vectors.ts'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** The cookie the app's login route sets, and the bearer token it accepts. */
export const SESSION_COOKIE = 'sid=s3cr3t-session';
export const PAGE_TOKEN = 'tök=n/with+odd chars';

export interface WebApp {
  /** https://127.0.0.1:<port> */
  origin: string;
  port: number;
  server: NetchanServer;
  /** Upgrade requests that reached the app's auth: their Origin and who they were. */
  upgrades: { origin: string | undefined; principal: string | undefined }[];
  /** Drops every connection of the app now (a cut network). */
  cut(): void;
  close(): Promise<void>;
}

/**
 * The app: `/` a page that imports netchan.js, `/login` sets the session cookie, `/netchan` the
 * endpoint behind an auth that takes the cookie (principal `alice`) or the bearer token (`bob`);
 * `/open` a second endpoint on `openServer` (another Origin policy).
 */
export async function startWebApp(bundles: string, options: ServerOptions = {}, openOptions?: ServerOptions, port = 0): Promise<WebApp> {
  const certs = await testCertificates();
  const server = createServer(options);
  const open = openOptions ? createServer(openOptions) : undefined;
  const upgrades: WebApp['upgrades'] = [];
  const app = express();
  const auth = (req: Request, res: Response, next: NextFunction): void => {
    const cookie = req.get('cookie') ?? '';
    const principal = cookie.split(/;\s*/).includes(SESSION_COOKIE) ? 'alice' : req.get('authorization') === `Bearer ${PAGE_TOKEN}` ? 'bob' : undefined;
    if (req.get('upgrade')) upgrades.push({ origin: req.get('origin'), principal });
    if (!principal) {
      res.sendStatus(401);
      return;
    }
    res.locals.principal = principal;
    next();
  };
  app.get('/', (_req, res) => {
    res.type('html').send('<!doctype html><title>netchan</title><script type="module">import * as n from "/netchan.js"; import * as v from "/vectors.js"; window.netchan = n; window.vectors = v; window.ready = true;</script>');
  });
  // the bundles: netchan.js, vectors.js, and what a test builds beside them
  app.get(/^\/([a-z-]+)\.js$/, (req, res) => res.sendFile(path.join(bundles, `${(req.params as Record<string, string>)[0]}.js`)));
  app.get('/login', (_req, res) => {
    res.set('set-cookie', `${SESSION_COOKIE}; Path=/; Secure; HttpOnly; SameSite=Strict`).send('ok');
  });
  app.use('/netchan', auth, netchan(server));
  if (open) app.use('/open', auth, netchan(open));
  const web = http2.createSecureServer({ key: certs.key, cert: certs.cert, allowHTTP1: true, minVersion: 'TLSv1.3' });
  web.on('request', app as never);
  attach(web, app);
  const sockets = new Set<Socket>();
  web.on('secureConnection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => web.listen(port, '127.0.0.1', resolve));
  const bound = (web.address() as { port: number }).port;
  return {
    origin: `https://127.0.0.1:${bound}`,
    port: bound,
    server,
    upgrades,
    cut: () => {
      for (const s of sockets) s.destroy();
    },
    close: async () => {
      await server.close();
      await open?.close();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => web.close(() => resolve()));
    },
  };
}
