/**
 * netchan in a web page: the `netchan/browser` bundle in real Chromium (Debian's, driven by
 * playwright-core), against an Express app with netchan mounted, over TLS.
 */
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { Channel } from '../lib/index.js';
import { buildPageBundles, launchChromium, startWebApp, PAGE_TOKEN, type WebApp } from './helpers/browser.js';

type PageNetchan = typeof import('../lib/browser/index.js');
declare global {
  interface Window {
    netchan: PageNetchan;
    vectors: typeof import('./browser/vectors.js');
    ready?: boolean;
    [key: string]: unknown;
  }
}

describe('netchan in the browser (Chromium)', function () {
  this.timeout(60_000);
  let browser: Browser;
  let bundles: Awaited<ReturnType<typeof buildPageBundles>>;
  let app: WebApp;
  let context: BrowserContext;
  let page: Page;

  before(async () => {
    [browser, bundles] = await Promise.all([launchChromium(), buildPageBundles()]);
  });
  after(async () => {
    await browser?.close();
    await bundles?.remove();
  });

  /** A fresh app and page (logged in: the app's session cookie is set) for each test. */
  async function openPage(login = true, origin?: string): Promise<Page> {
    context = await browser.newContext({ ignoreHTTPSErrors: true });
    const p = await context.newPage();
    p.on('pageerror', (err) => console.error('page error:', err));
    if (login) await p.goto(`${app.origin}/login`);
    await p.goto(origin ?? `${app.origin}/`);
    await p.waitForFunction(() => window.ready === true);
    return p;
  }

  beforeEach(async () => {
    app = await startWebApp(bundles.dir);
  });
  afterEach(async () => {
    await context?.close();
    await app?.close();
  });

  it('runs the codec, frame and mux test vectors in the page', async () => {
    page = await openPage(false);
    const { ran, failures } = await page.evaluate(() => window.vectors.runVectors());
    expect(failures).to.deep.equal([]);
    expect(ran).to.be.greaterThan(100);
  });

  it('request/reply with a reply channel inside the value, on the cookie session', async () => {
    const squares = app.server.channel<{ n: number; reply: Channel<number> }>('square', 10);
    void (async () => {
      for await (const { n, reply } of squares) await reply.send(n * n);
    })();
    page = await openPage();
    const out = await page.evaluate(async () => {
      const { connect, Channel } = window.netchan;
      const session = await connect('/netchan');
      const square = session.channel<{ n: number; reply: InstanceType<typeof Channel<number>> }>('square');
      const results: number[] = [];
      for (let n = 1; n <= 20; n++) {
        const reply = new Channel<number>();
        await square.send({ n, reply });
        results.push(await reply.receive());
      }
      const transport = session.transport;
      await session.close();
      return { results, transport };
    });
    expect(out.results).to.deep.equal(Array.from({ length: 20 }, (_, i) => (i + 1) ** 2));
    expect(out.transport).to.equal('ws');
    expect(app.upgrades.map((u) => u.principal)).to.deep.equal(['alice']);
  });
});
