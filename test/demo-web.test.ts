/**
 * `npm run demo:web`: the live page in real Chromium. Its eight client sessions echo tasks, the
 * chart moves, a cut of every connection is resumed with nothing lost or duplicated, and the
 * README's screenshot (docs/demo-web.png) is taken here.
 */
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import type { Browser } from 'playwright-core';
import { startDemo, type Demo, type DemoStats } from '../examples/web/server.js';
import { launchChromium } from './helpers/browser.js';

const screenshot = fileURLToPath(new URL('../docs/demo-web.png', import.meta.url));

interface PageState {
  resumed: number;
  down: number;
  latest?: DemoStats;
}

describe('npm run demo:web (Chromium)', function () {
  this.timeout(60_000);
  let browser: Browser | undefined;
  let demo: Demo | undefined;
  after(async () => {
    await browser?.close();
    await demo?.close();
  });

  it('runs the cluster demo live in the page, survives a cut, and is photographed for the README', async () => {
    [browser, demo] = await Promise.all([launchChromium(), startDemo()]);
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 960, height: 700 }, deviceScaleFactor: 1 });
    await context.addInitScript('window.__name = (f) => f');
    const page = await context.newPage();
    page.on('pageerror', (err) => console.error('page error:', err));
    await page.goto(demo.url);
    const state = (): Promise<PageState> => page.evaluate(() => (window as unknown as { demo: PageState }).demo);
    await page.waitForFunction(() => {
      const s = (window as unknown as { demo: PageState }).demo?.latest;
      return s !== undefined && s.clients === 8 && s.rate > 0;
    }, undefined, { timeout: 20_000 });
    const before = (await state()).latest as DemoStats;
    await page.click('#cut');
    // all nine sessions (eight clients and the one watching) resume
    await page.waitForFunction(() => (window as unknown as { demo: PageState }).demo.resumed >= 9 && (window as unknown as { demo: PageState }).demo.down === 0, undefined, { timeout: 20_000 });
    await page.waitForFunction((r) => {
      const s = (window as unknown as { demo: PageState }).demo.latest as DemoStats;
      return s.received > r + 1000 && s.rate > 0 && s.cuts === 1;
    }, before.received, { timeout: 20_000 });
    await new Promise((r) => setTimeout(r, 3000)); // a few seconds of chart after the cut
    const after = (await state()).latest as DemoStats;
    expect(after.clients).to.equal(8);
    expect(after.lost).to.equal(0);
    expect(after.duplicated).to.equal(0);
    expect(demo.stats().duplicated).to.equal(0);
    expect(await page.textContent('#lost')).to.equal('0 / 0');
    await page.screenshot({ path: screenshot, fullPage: true });
    await context.close();
  });
});
