/**
 * netchan in a web page: the `netchan/browser` bundle in real Chromium (Debian's, driven by
 * playwright-core), against an Express app with netchan mounted, over TLS.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build as esbuild } from 'esbuild';
import { Readable, type Writable } from 'node:stream';
import { expect } from 'chai';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { buildBrowser } from '../bin/build-browser.js';
import { Channel, connect } from '../lib/index.js';
import { testCertificates } from './helpers/certs.js';
import { rawUpgrade } from './helpers/upgrade.js';
import { collectingSink } from './helpers/streams.js';
import { until } from './helpers/net.js';
import { buildPageBundles, launchChromium, startWebApp, PAGE_TOKEN, SESSION_COOKIE, type WebApp } from './helpers/browser.js';

const repoRoot = fileURLToPath(new URL('../', import.meta.url));

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
    // the functions of page.evaluate come from tsx, which names them with a helper of its own
    await context.addInitScript('window.__name = (f) => f');
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

  it('keeps every value type both ways: Date, BigInt, binary as Uint8Array, Map, Set, Error, undefined, nesting', async () => {
    const echo = app.server.channel<{ value: unknown; reply: Channel<unknown> }>('echo', 4);
    const seen: unknown[] = [];
    void (async () => {
      for await (const { value, reply } of echo) {
        seen.push(value);
        await reply.send(value);
      }
    })();
    page = await openPage();
    const out = await page.evaluate(async () => {
      const { connect, Channel } = window.netchan;
      const session = await connect('/netchan');
      const echoes = session.channel<{ value: unknown; reply: InstanceType<typeof Channel<unknown>> }>('echo');
      const cause = new Error('inner');
      const err = Object.assign(new RangeError('outer', { cause }), { code: 'E_OUTER' });
      const value = {
        when: new Date(1700000000123), big: -(2n ** 100n), bin: new Uint8Array([0, 1, 255]),
        map: new Map<unknown, unknown>([[1, 'one'], ['set', new Set([1n, 'x'])]]), err, u: undefined,
        deep: [[[{ s: 'é ✓', n: 1.5, t: true, z: null }]]],
      };
      const reply = new Channel<typeof value>();
      await echoes.send({ value, reply });
      const back = await reply.receive();
      await session.close();
      return {
        when: back.when instanceof Date && back.when.getTime() === 1700000000123,
        big: back.big === -(2n ** 100n),
        bin: Object.getPrototypeOf(back.bin) === Uint8Array.prototype && Array.from(back.bin).join() === '0,1,255',
        map: back.map instanceof Map && back.map.get(1) === 'one' && back.map.get('set') instanceof Set && (back.map.get('set') as Set<unknown>).has(1n),
        err: back.err instanceof Error && back.err.name === 'RangeError' && back.err.message === 'outer' && back.err.code === 'E_OUTER' && (back.err.cause as Error).message === 'inner',
        u: 'u' in back && back.u === undefined,
        deep: JSON.stringify(back.deep) === JSON.stringify(value.deep),
      };
    });
    expect(out).to.deep.equal({ when: true, big: true, bin: true, map: true, err: true, u: true, deep: true });
    const got = seen[0] as Record<string, unknown>;
    expect(got.when).to.be.instanceOf(Date);
    expect(got.big).to.equal(-(2n ** 100n));
    expect([...(got.bin as Uint8Array)]).to.deep.equal([0, 1, 255]);
    expect((got.map as Map<unknown, unknown>).get(1)).to.equal('one');
    expect((got.err as Error & { code: string }).code).to.equal('E_OUTER');
  });

  it('a channel the server sends inside a value is a remote handle in the page; select and AbortSignal work there', async () => {
    const offers = app.server.channel<{ inbox: Channel<string> }>('offers', 1);
    const inbox = new Channel<string>(4);
    page = await openPage();
    const out = page.evaluate(async () => {
      const { connect, Channel, select, RemoteChannel } = window.netchan;
      const session = await connect('/netchan');
      const { inbox } = await session.channel<{ inbox: InstanceType<typeof RemoteChannel<string>> }>('offers').receive();
      const isRemote = inbox instanceof RemoteChannel;
      await inbox.send('from the page');
      const a = new Channel<string>(1), b = new Channel<string>(1);
      b.trySend('b');
      const picked = await select<string>([{ receive: a }, { receive: b }]);
      let aborted = '';
      try {
        await a.receive({ signal: AbortSignal.timeout(50) });
      } catch (err) {
        aborted = (err as { code: string }).code;
      }
      await session.close();
      return { isRemote, picked: [picked.index, picked.value], aborted };
    });
    await offers.send({ inbox });
    expect(await inbox.receive()).to.equal('from the page');
    expect(await out).to.deep.equal({ isRemote: true, picked: [1, 'b'], aborted: 'ERR_ABORTED' });
  });

  it('a capacity-0 send from the page resolves only once the server program took the value, and back', async () => {
    const rv = app.server.channel<string>('rv', 0);
    const ready = app.server.channel<string>('ready', 1);
    const back = app.server.channel<Channel<string>>('back', 1);
    page = await openPage();
    const pageDone = page.evaluate(async () => {
      const { connect, Channel } = window.netchan;
      const session = await connect('/netchan');
      await session.channel<string>('ready').send('sending');
      const t0 = performance.now();
      await session.channel<string>('rv').send('hello');
      const waited = performance.now() - t0;
      // the page's own capacity-0 channel, sent to the server: its send waits for the page
      const mine = new Channel<string>(0);
      await session.channel<InstanceType<typeof Channel<string>>>('back').send(mine);
      await new Promise((r) => setTimeout(r, 800));
      const value = await mine.receive();
      await session.close();
      return { waited, value };
    });
    // the server's program takes the value 800 ms after the page started sending it
    expect(await ready.receive()).to.equal('sending');
    await new Promise((r) => setTimeout(r, 800));
    expect(await rv.receive()).to.equal('hello');
    const theirs = await back.receive();
    const t0 = performance.now();
    await theirs.send('from the server');
    const serverWaited = performance.now() - t0;
    const out = await pageDone;
    expect(out.waited).to.be.greaterThan(600);
    expect(out.value).to.equal('from the server');
    expect(serverWaited).to.be.greaterThan(300);
  });

  it('moves 8 MiB each way as web streams, digests equal', async () => {
    const size = 8 * 1024 * 1024;
    const pattern = (i: number): number => (i * 7 + (i >> 11)) & 0xff;
    const uploads = app.server.channel<{ data: Readable; reply: Channel<string> }>('upload', 1);
    const downloads = app.server.channel<{ sink: Writable; reply: Channel<string> }>('download', 1);
    const serverBytes = Buffer.alloc(size);
    for (let i = 0; i < size; i++) serverBytes[i] = pattern(i);
    const serverDigest = createHash('sha256').update(serverBytes).digest('hex');
    void (async () => {
      const { data, reply } = await uploads.receive();
      const hash = createHash('sha256');
      let n = 0;
      for await (const chunk of data) {
        hash.update(chunk as Buffer);
        n += (chunk as Buffer).length;
      }
      await reply.send(`${n}:${hash.digest('hex')}`);
    })();
    void (async () => {
      const { sink, reply } = await downloads.receive();
      for (let off = 0; off < size; off += 256 * 1024) {
        if (!sink.write(serverBytes.subarray(off, off + 256 * 1024))) await new Promise((r) => sink.once('drain', r));
      }
      sink.end();
      await reply.send(`${size}:${serverDigest}`);
    })();
    page = await openPage();
    const out = await page.evaluate(async (size) => {
      const { connect, Channel } = window.netchan;
      const pattern = (i: number): number => (i * 7 + (i >> 11)) & 0xff;
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = pattern(i);
      const hex = (b: ArrayBuffer): string => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, '0')).join('');
      const digest = hex(await crypto.subtle.digest('SHA-256', bytes));
      const session = await connect('/netchan');
      let offset = 0;
      const data = new ReadableStream<Uint8Array>({
        pull(c) {
          if (offset >= size) return c.close();
          c.enqueue(bytes.slice(offset, offset + 100_000));
          offset += 100_000;
        },
      });
      const upReply = new Channel<string>();
      await session.channel('upload').send({ data, reply: upReply });
      const up = await upReply.receive();
      const received: Uint8Array[] = [];
      const sink = new WritableStream<Uint8Array>({ write(chunk) { received.push(chunk.slice()); } });
      const downReply = new Channel<string>();
      await session.channel('download').send({ sink, reply: downReply });
      const down = await downReply.receive();
      // the sink has every byte once the server ended it: wait for its last write
      let n = 0;
      for (let tries = 0; tries < 100 && n < size; tries++) {
        n = received.reduce((a, c) => a + c.length, 0);
        if (n < size) await new Promise((r) => setTimeout(r, 50));
      }
      const all = new Uint8Array(n);
      let at = 0;
      for (const c of received) { all.set(c, at); at += c.length; }
      await session.close();
      return { digest, up, down, downLocal: `${n}:${hex(await crypto.subtle.digest('SHA-256', all))}` };
    }, size);
    expect(out.digest).to.equal(serverDigest);
    expect(out.up).to.equal(`${size}:${serverDigest}`);
    expect(out.down).to.equal(`${size}:${serverDigest}`);
    expect(out.downLocal).to.equal(`${size}:${serverDigest}`);
  });

  it('a byte stream the server sends is a ReadableStream in the page', async () => {
    const files = app.server.channel<{ name: string; body: Readable }>('files', 1);
    page = await openPage();
    const text = page.evaluate(async () => {
      const session = await window.netchan.connect('/netchan');
      const { name, body } = await session.channel<{ name: string; body: ReadableStream<Uint8Array> }>('files').receive();
      const isWeb = body instanceof ReadableStream;
      const content = await new Response(body).text();
      await session.close();
      return { name, isWeb, content };
    });
    await files.send({ name: 'a.txt', body: Readable.from([Buffer.from('hello '), Buffer.from('page')]) });
    expect(await text).to.deep.equal({ name: 'a.txt', isWeb: true, content: 'hello page' });
  });

  it('receives from a server-owned channel, in order, and its close ends the page loop', async () => {
    const ticks = app.server.channel<number>('ticks', 4);
    page = await openPage();
    const got = page.evaluate(async () => {
      const session = await window.netchan.connect('/netchan');
      const seen: number[] = [];
      for await (const n of session.channel<number>('ticks')) seen.push(n);
      await session.close();
      return seen;
    });
    for (let i = 0; i < 300; i++) await ticks.send(i);
    ticks.close();
    expect(await got).to.deep.equal(Array.from({ length: 300 }, (_, i) => i));
  });

  it('a cut connection resumes: nothing lost or duplicated either way, order kept', async () => {
    const down = app.server.channel<number>('down', 8);
    const up = app.server.channel<number>('up', 8);
    const count = 400;
    page = await openPage();
    const pageSide = page.evaluate(async (count) => {
      const session = await window.netchan.connect('/netchan');
      let reconnects = 0;
      session.on('reconnect', () => reconnects++);
      const ups = session.channel<number>('up');
      const sending = (async () => {
        for (let i = 0; i < count; i++) await ups.send(i);
      })();
      const seen: number[] = [];
      const downs = session.channel<number>('down');
      for (let i = 0; i < count; i++) {
        seen.push(await downs.receive());
        if (i % 50 === 0) await new Promise((r) => setTimeout(r, 20));
      }
      await sending;
      await session.close();
      return { seen, reconnects };
    }, count);
    const received: number[] = [];
    const receiving = (async () => {
      for (let i = 0; i < count; i++) received.push(await up.receive());
    })();
    for (let i = 0; i < count; i++) {
      await down.send(i);
      if (i === 100 || i === 250) app.cut();
    }
    await receiving;
    const out = await pageSide;
    expect(out.reconnects).to.equal(2);
    expect(out.seen).to.deep.equal(Array.from({ length: count }, (_, i) => i));
    expect(received).to.deep.equal(Array.from({ length: count }, (_, i) => i));
  });

  it("a page whose timers never fire (a hidden tab's are throttled) keeps its session: the server pings it; a Node client that does not ping is ended", async () => {
    await app.close();
    app = await startWebApp(bundles.dir, { idleTimeoutMs: 1500, sessionLeaseMs: 0 });
    const echo = app.server.channel<{ n: number; reply: Channel<number> }>('echo', 1);
    void (async () => {
      for await (const { n, reply } of echo) await reply.send(n);
    })();
    // the control case first: a client whose heartbeat is slower than the server's idle timeout
    const certs = await testCertificates();
    const node = await connect(`${app.origin.replace('127.0.0.1', 'localhost')}/netchan`, { ca: certs.caCert, token: PAGE_TOKEN, transport: 'ws', heartbeatIntervalMs: 60_000 });
    const nodeEnded = new Promise<string>((resolve) => node.on('close', (err) => resolve(err.code)));
    context = await browser.newContext({ ignoreHTTPSErrors: true });
    await context.addInitScript('window.__name = (f) => f; window.setInterval = () => 0;');
    page = await context.newPage();
    await page.goto(`${app.origin}/login`);
    await page.goto(`${app.origin}/`);
    await page.waitForFunction(() => window.ready === true);
    const out = await page.evaluate(async () => {
      const { connect, Channel } = window.netchan;
      const session = await connect('/netchan');
      let disconnects = 0;
      session.on('disconnect', () => disconnects++);
      // four idle timeouts without a timer of the page's firing
      await new Promise((r) => setTimeout(r, 6000));
      const reply = new Channel<number>();
      await session.channel('echo').send({ n: 42, reply });
      const n = await reply.receive();
      await session.close();
      return { n, disconnects };
    });
    expect(out).to.deep.equal({ n: 42, disconnects: 0 });
    expect(await nodeEnded).to.equal('ERR_SESSION_CLOSED');
  });

  it('a page with neither the cookie nor a token is refused by the app\'s auth, and one with the token is bob', async () => {
    page = await openPage(false);
    const who = app.server.channel<string>('who', 1);
    const out = await page.evaluate(async (token) => {
      const { connect } = window.netchan;
      let refused = '';
      try {
        await connect('/netchan', { reconnect: false });
      } catch (err) {
        refused = (err as { code: string }).code;
      }
      const session = await connect('/netchan', { token });
      await session.channel<string>('who').send('hi');
      await session.close();
      return { refused };
    }, PAGE_TOKEN);
    expect(out.refused).to.equal('ERR_CONNECT');
    expect(await who.receive()).to.equal('hi');
    expect(app.upgrades.map((u) => u.principal)).to.deep.equal([undefined, 'bob']);
  });

  it('a page of another origin is refused (403 ERR_FORBIDDEN_ORIGIN), even with valid credentials; an allowed origin is served', async () => {
    // the page comes from https://localhost:<port>, the endpoint is https://127.0.0.1:<port>:
    // /netchan keeps the default (same origin), /open allows the page's origin
    const port = app.port;
    await app.close();
    const pageOrigin = `https://localhost:${port}`;
    app = await startWebApp(bundles.dir, {}, { allowedOrigins: [pageOrigin] }, port);
    page = await openPage(false, `${pageOrigin}/`);
    const out = await page.evaluate(
      async ({ endpoint, token }) => {
        const { connect } = window.netchan;
        let refused = '';
        try {
          await connect(`${endpoint}/netchan`, { token, reconnect: false });
        } catch (err) {
          refused = (err as { code: string }).code;
        }
        const session = await connect(`${endpoint}/open`, { token });
        const transport = session.transport;
        await session.close();
        return { refused, transport };
      },
      { endpoint: app.origin, token: PAGE_TOKEN },
    );
    expect(out).to.deep.equal({ refused: 'ERR_CONNECT', transport: 'ws' });
    // both passed the app's auth as bob: the Origin check refused the first
    expect(app.upgrades).to.deep.equal([
      { origin: pageOrigin, principal: 'bob' },
      { origin: pageOrigin, principal: 'bob' },
    ]);
    // what the page cannot see: the answer to that upgrade
    const answer = await rawUpgrade(port, '/netchan', { origin: pageOrigin, cookie: SESSION_COOKIE });
    expect(answer).to.match(/^HTTP\/1\.1 403 /);
    expect(answer).to.match(/netchan-error: ERR_FORBIDDEN_ORIGIN/i);
    expect(await rawUpgrade(port, '/netchan', { origin: app.origin, cookie: SESSION_COOKIE })).to.match(/^HTTP\/1\.1 101 /);
  });

  it('keeps memory bounded by credits when the page is slow, when the server is slow, and on a byte stream nobody reads', async () => {
    const flood = app.server.channel<Uint8Array>('flood', 8);
    const sink = app.server.channel<Uint8Array>('sink', 4);
    const bodies = app.server.channel<Readable>('bodies', 1);
    let serverSent = 0;
    const blob = new Uint8Array(10_000);
    const sending = (async () => {
      try {
        for (let i = 0; i < 1000; i++) {
          await flood.send(blob);
          serverSent++;
        }
      } catch {
        // the channel closes at the end of the test
      }
    })();
    page = await openPage();
    const out = await page.evaluate(async () => {
      const session = await window.netchan.connect('/netchan');
      const handle = session.channel<Uint8Array>('flood');
      for (let i = 0; i < 5; i++) await handle.receive();
      // the page stops reading: what the server may send is bounded by credits
      let pageSent = 0;
      const up = session.channel<Uint8Array>('sink');
      void (async () => {
        for (let i = 0; i < 1000; i++) {
          await up.send(new Uint8Array(10_000));
          pageSent++;
        }
      })().catch(() => undefined);
      let pulled = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          pulled += 65_536;
          c.enqueue(new Uint8Array(65_536));
          if (pulled >= 64 * 1024 * 1024) c.close();
        },
      });
      await session.channel('bodies').send(body);
      await new Promise((r) => setTimeout(r, 1500));
      return { pageSent, pulled };
    });
    // server → page: the channel's 8 and the handle's prefetch, beyond the 5 the page took
    expect(serverSent).to.be.at.most(5 + 8 + 8 + 1);
    expect(serverSent).to.be.at.least(5);
    // page → server: the channel's 4 and the page's 4 credits (the server's program never receives)
    expect(out.pageSent).to.be.at.most(4 + 4);
    expect(out.pageSent).to.be.at.least(4);
    expect(sink.length).to.be.at.most(4);
    // a byte stream the server does not read: pulled only as far as the windows go, not 64 MiB
    expect((await bodies.receive()).readableLength).to.be.at.most(4 * 1024 * 1024);
    expect(out.pulled).to.be.at.most(4 * 1024 * 1024);
    flood.close();
    await sending;
  });

  it("a page's write of what is no bytes to a server's Writable fails it on both sides (ERR_INVALID_ARGUMENT), the session goes on", async () => {
    const sinks = app.server.channel<{ sink: Writable }>('sinks', 1);
    const { sink, got } = collectingSink();
    void sinks.send({ sink });
    const echo = app.server.channel<string>('echo', 1);
    page = await openPage();
    const out = await page.evaluate(async () => {
      const session = await window.netchan.connect('/netchan');
      const { sink } = await session.channel<{ sink: WritableStream<Uint8Array> }>('sinks').receive();
      const writer = sink.getWriter();
      await writer.write(new TextEncoder().encode('one'));
      let code = '';
      try {
        await writer.write(new ArrayBuffer(3) as unknown as Uint8Array);
      } catch (err) {
        code = (err as { code: string }).code;
      }
      await session.channel<string>('echo').send('still here');
      window.session = session;
      return code;
    });
    expect(out).to.equal('ERR_INVALID_ARGUMENT');
    expect(await echo.receive()).to.equal('still here');
    // failed with the session open, not only once it closes
    await until(() => sink.destroyed, 5000, "the server's Writable to fail");
    expect(Buffer.concat(got).toString()).to.equal('one');
    await page.evaluate(() => (window.session as { close(): Promise<void> }).close());
  });

  it("a page's own esbuild bundle imports 'netchan/browser' by the package's exports, with no shims, and no Node global leaks into the page", async () => {
    // the package as an app installs it: node_modules/netchan, its dist/ built
    await buildBrowser();
    const project = await mkdtemp(path.join(os.tmpdir(), 'netchan-app-'));
    try {
      await mkdir(path.join(project, 'node_modules'));
      await symlink(repoRoot, path.join(project, 'node_modules', 'netchan'), 'dir');
      await writeFile(
        path.join(project, 'app.ts'),
        `import { connect, Channel } from 'netchan/browser';
import * as main from 'netchan';
export async function run(): Promise<unknown> {
  const session = await connect('/netchan');
  const reply = new Channel<number>();
  await session.channel<{ n: number; reply: Channel<number> }>('square').send({ n: 12, reply });
  const squared = await reply.receive();
  await session.close();
  return { squared, sameBuild: main.connect === connect };
}
`,
      );
      const result = await esbuild({ entryPoints: [path.join(project, 'app.ts')], absWorkingDir: project, bundle: true, format: 'esm', platform: 'browser', outfile: path.join(bundles.dir, 'app.js'), metafile: true, logLevel: 'silent' });
      const inputs = Object.keys(result.metafile.inputs);
      expect(inputs.filter((f) => f.includes('dist/browser/netchan.js'))).to.have.length(1);
      expect(inputs.filter((f) => f.startsWith('node:') || f.includes('node_modules/ws/'))).to.deep.equal([]);
      const text = await readFile(path.join(repoRoot, 'dist/browser/netchan.js'), 'utf8');
      expect(text).not.to.match(/\bfrom\s*["']node:|\bimport\(\s*["']node:|\brequire\(/);
      const squares = app.server.channel<{ n: number; reply: Channel<number> }>('square', 1);
      void (async () => {
        const { n, reply } = await squares.receive();
        await reply.send(n * n);
      })();
      page = await openPage();
      const out = await page.evaluate(async () => {
        const app = (await import('/app.js' as string)) as { run(): Promise<unknown> };
        const g = globalThis as Record<string, unknown>;
        return { result: await app.run(), buffer: typeof g.Buffer, process: typeof g.process, setImmediate: typeof g.setImmediate };
      });
      expect(out).to.deep.equal({ result: { squared: 144, sameBuild: true }, buffer: 'undefined', process: 'undefined', setImmediate: 'undefined' });
    } finally {
      await rm(project, { recursive: true, force: true });
    }
  });
});
