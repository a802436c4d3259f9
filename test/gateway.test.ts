import { spawn } from 'node:child_process';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import type { Duplex } from 'node:stream';
import { expect } from 'chai';
import express from 'express';
import { GATEWAY_AUDIT_CHANNEL, connect, createGateway, createServer, type GatewayAuditEvent } from '../lib/index.js';
import { specialAddressKind } from '../lib/gateway/addresses.js';
import { attach, netchan } from '../middleware/express.js';
import { decodeMuxFrame, encodeHeaders, encodeMuxFrame } from '../lib/wire/mux-frames.js';
import { rejection } from './helpers/assert.js';
import { httpGet, readAll } from './helpers/streams.js';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, startServer, teardown, until, useTransport } from './helpers/net.js';

/** Audit events published while a test runs. */
const audits: GatewayAuditEvent[] = [];
const onAudit = (event: unknown): void => {
  audits.push(event as GatewayAuditEvent);
};

/** A TCP server on 127.0.0.1 port 0, closed (with its connections) on teardown. */
async function tcpServer(onConnection: (socket: net.Socket) => void): Promise<{ server: net.Server; port: number; target: string }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onTeardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { server, port, target: `127.0.0.1:${port}` };
}

/** Echoes what it reads, and half-closes when the peer does. */
function echoServer() {
  return tcpServer((socket) => socket.pipe(socket));
}

/** Reads until EOF, and only then answers with the byte count: the peer must write after reading EOF. */
function countThenAnswerServer() {
  return tcpServer((socket) => {
    let n = 0;
    socket.on('data', (c: Buffer) => (n += c.length));
    socket.on('end', () => socket.end(`got ${n} bytes`));
  });
}

function localConnect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
    onTeardown(() => void s.destroy());
  });
}

/** A server whose gateway allows `target`, a client session, and a local socket through its `forward` to it. */
async function forwardedTo(target: string) {
  const { server, client } = await startServer();
  createGateway(server, { allow: [target] });
  const session = await client();
  const fw = await session.forward({ target });
  onTeardown(() => fw.close());
  const local = await localConnect(fw.address.port);
  return { server, session, local };
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function tokenAuth(tokens: Record<string, string>) {
  return ({ headers }: { headers: Record<string, string | string[] | undefined> }) => {
    const auth = headers.authorization;
    const token = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : '';
    return tokens[token] ?? false;
  };
}

describe('TCP gateway: policy on addresses', () => {
  it('names special addresses, IPv4 inside IPv6 too', () => {
    expect(specialAddressKind('127.0.0.1')).to.equal('loopback');
    expect(specialAddressKind('127.255.0.9')).to.equal('loopback');
    expect(specialAddressKind('::1')).to.equal('loopback');
    expect(specialAddressKind('169.254.169.254')).to.equal('cloud metadata');
    expect(specialAddressKind('::ffff:169.254.169.254')).to.equal('cloud metadata');
    expect(specialAddressKind('::ffff:7f00:1')).to.equal('loopback');
    expect(specialAddressKind('64:ff9b::a9fe:a9fe')).to.equal('cloud metadata');
    expect(specialAddressKind('fd00:ec2::254')).to.equal('cloud metadata');
    expect(specialAddressKind('169.254.3.4')).to.equal('link-local');
    expect(specialAddressKind('fe80::1')).to.equal('link-local');
    expect(specialAddressKind('0.0.0.0')).to.match(/unspecified/);
    expect(specialAddressKind('::')).to.equal('unspecified');
    expect(specialAddressKind('10.1.2.3')).to.equal(undefined);
    expect(specialAddressKind('192.168.1.1')).to.equal(undefined);
    expect(specialAddressKind('2001:db8::1')).to.equal(undefined);
  });

  it('refuses malformed rules when the gateway is enabled', async () => {
    const { server } = await startServer();
    for (const bad of ['db', 'db:0', 'db:70000', '10.0.0.0/33:80', 'a b:80', 'db:9-1']) {
      expect(() => createGateway(server, { allow: [bad] }), bad).to.throw().with.property('code', 'ERR_INVALID_ARGUMENT');
    }
  });
});

describe('PROTOCOL §8 test vectors', () => {
  const vectors = JSON.parse(readFileSync(new URL('./vectors/gateway.json', import.meta.url), 'utf8')) as {
    frames: { name: string; hex: string; type: number; stream: number; headers?: Record<string, string>; payloadHex?: string }[];
  };
  for (const v of vectors.frames) {
    it(v.name, () => {
      const payload = v.headers ? encodeHeaders(v.headers) : Buffer.from(v.payloadHex ?? '', 'hex');
      expect(encodeMuxFrame(v.type, v.stream, payload).toString('hex')).to.equal(v.hex);
      const decoded = decodeMuxFrame(Buffer.from(v.hex, 'hex'));
      expect(decoded.type).to.equal(v.type);
      expect(decoded.stream).to.equal(v.stream);
      if (v.headers) expect(decoded.headers).to.deep.equal(v.headers);
    });
  }
});

for (const transport of ['h2', 'ws'] as const) describe(`TCP gateway over ${transport === 'h2' ? 'HTTP/2' : 'the WebSocket fallback'}`, function () {
  this.timeout(30_000);
  before(() => {
    useTransport(transport);
    subscribe(GATEWAY_AUDIT_CHANNEL, onAudit);
  });
  after(() => {
    useTransport('h2');
    unsubscribe(GATEWAY_AUDIT_CHANNEL, onAudit);
  });
  beforeEach(() => {
    audits.length = 0;
  });
  afterEach(teardown);

  it('fetches from an HTTP server through session.forward', async () => {
    const web = http.createServer((req, res) => res.end(`hello from ${req.url}`));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    onTeardown(() => new Promise<void>((r) => (web.closeAllConnections(), web.close(() => r()))));
    const target = `127.0.0.1:${(web.address() as AddressInfo).port}`;
    const { server, client } = await startServer();
    createGateway(server, { allow: [target] });
    const session = await client();
    const fw = await session.forward({ local: '127.0.0.1:0', target });
    onTeardown(() => fw.close());
    expect(fw.address.address).to.equal('127.0.0.1');
    for (const path of ['/a', '/b', '/c']) expect(await httpGet(fw.address.port, path)).to.deep.equal({ status: 200, body: `hello from ${path}` });
    await until(() => audits.filter((a) => a.outcome === 'closed').length === 3, 5000, 'three audit events');
    const a = audits[0]!;
    expect(a).to.include({ principal: '', target, address: '127.0.0.1', sessionId: session.id });
    expect(a.remoteAddress, 'the client address (over ws too)').to.match(/^(::ffff:)?127\.0\.0\.1$/);
    expect(a.bytesToTarget).to.be.greaterThan(20);
    expect(a.bytesFromTarget).to.be.greaterThan(20);
    expect(a.durationMs).to.be.a('number');
  });

  it('half-close: the target reads to EOF, then answers (dialTcp and forward)', async () => {
    const { target } = await countThenAnswerServer();
    const { server, client } = await startServer();
    createGateway(server, { allow: [target] });
    const session = await client();
    const conn = await session.dialTcp(target);
    conn.end(Buffer.alloc(100_000, 7));
    expect((await readAll(conn)).toString()).to.equal('got 100000 bytes');

    const fw = await session.forward({ target });
    onTeardown(() => fw.close());
    const local = await localConnect(fw.address.port);
    local.end('hello');
    expect((await readAll(local)).toString()).to.equal('got 5 bytes');
  });

  it('half-close the other way: the target ends first and still reads what the client writes after', async () => {
    let received: Promise<string> | undefined;
    const { target } = await tcpServer((socket) => {
      socket.end('bye');
      received = readAll(socket).then((b) => b.toString());
    });
    const { server, client } = await startServer();
    createGateway(server, { allow: [target] });
    const session = await client();
    const conn = await session.dialTcp(target);
    expect((await readAll(conn)).toString()).to.equal('bye');
    conn.end('written after the target ended');
    await until(() => received !== undefined);
    expect(await received).to.equal('written after the target ended');
  });

  it('backpressure end to end: a target writing 64 MiB to a client that does not read is held back', async () => {
    const TOTAL = 64 * 1024 * 1024;
    let accepted = 0;
    const { target } = await tcpServer((socket) => {
      const chunk = Buffer.alloc(64 * 1024, 1);
      const pump = (): void => {
        while (accepted < TOTAL) {
          accepted += chunk.length;
          if (!socket.write(chunk)) return void socket.once('drain', pump);
        }
        socket.end();
      };
      pump();
    });
    const { server, client } = await startServer();
    createGateway(server, { allow: [target] });
    const session = await client();
    const conn = await session.dialTcp(target);
    conn.pause();
    await new Promise((r) => setTimeout(r, 700));
    const held = accepted;
    expect(held, `target wrote ${held} bytes with nobody reading`).to.be.lessThan(32 * 1024 * 1024);
    let got = 0;
    conn.on('data', (c: Buffer) => (got += c.length));
    conn.resume();
    await new Promise((r) => conn.once('end', r));
    expect(got).to.equal(TOTAL);
  });

  it('a denied target is refused with ERR_FORBIDDEN_TARGET and audited', async () => {
    const { target } = await echoServer();
    const { server, client } = await startServer();
    createGateway(server, { allow: ['10.0.0.0/8:5432'] });
    const session = await client();
    const err = await rejection(session.dialTcp(target));
    expect(err).to.include({ code: 'ERR_FORBIDDEN_TARGET', status: 403 });
    expect(err.message).to.equal(`target ${target} is not allowed for anonymous clients`);
    const err2 = await rejection(session.dialTcp('10.0.0.1:80'));
    expect(err2.code).to.equal('ERR_FORBIDDEN_TARGET');
    expect(err2.message).to.equal('target 10.0.0.1:80 is not allowed for anonymous clients');
    await until(() => audits.length === 2);
    expect(audits[0]).to.include({ outcome: 'forbidden', code: 'ERR_FORBIDDEN_TARGET', target, address: '127.0.0.1', bytesToTarget: 0 });
    expect(audits[1]).to.include({ outcome: 'forbidden', target: '10.0.0.1:80' });
  });

  it('a name resolving to loopback is refused unless a rule names the address', async () => {
    const { port } = await echoServer();
    const { server, client } = await startServer();
    createGateway(server, { allow: [`localhost:${port}`, `*:${port}`, ({ port: p }) => p === port] });
    const session = await client();
    const err = await rejection(session.dialTcp(`localhost:${port}`));
    expect(err.code).to.equal('ERR_FORBIDDEN_TARGET');
    expect(err.message).to.match(/^localhost resolves to (127\.0\.0\.1|::1), which is a loopback address: only a rule naming that address allows it$/);
    await until(() => audits.length === 1);
    expect(audits[0]).to.include({ outcome: 'forbidden', target: `localhost:${port}` });
    expect(audits[0]!.address).to.match(/^(127\.0\.0\.1|::1)$/);
    // naming the range allows it; the connection goes to the address that was checked
    createGateway(server, { allow: [`127.0.0.0/8:${port}`] });
    const conn = await session.dialTcp(`localhost:${port}`);
    conn.end('ping');
    expect((await readAll(conn)).toString()).to.equal('ping');
  });

  it('a name or IP literal leading to cloud metadata is refused, however it is written', async () => {
    const { server, client } = await startServer();
    createGateway(server, {
      allow: ['*:80', '*.example.test:80', () => true],
      lookup: async (host) => (host === 'metadata.example.test' ? [{ address: '169.254.169.254', family: 4 }] : []),
    });
    const session = await client();
    for (const target of ['metadata.example.test:80', '169.254.169.254:80', '[::ffff:169.254.169.254]:80', '[fd00:ec2::254]:80']) {
      const err = await rejection(session.dialTcp(target));
      expect(err.code, target).to.equal('ERR_FORBIDDEN_TARGET');
      expect(err.message, target).to.match(/cloud metadata address/);
    }
    await until(() => audits.length === 4);
    expect(audits.every((a) => a.outcome === 'forbidden')).to.equal(true);
  });

  it('a wrong token is refused with ERR_UNAUTHORIZED and audited', async () => {
    const { server, client } = await startServer({ authenticate: tokenAuth({ 's3cret': 'alice' }) });
    createGateway(server, { allow: ['127.0.0.1:1'] });
    const err = await rejection(client({ token: 'wrong' }));
    expect(err.code).to.equal('ERR_UNAUTHORIZED');
    await until(() => audits.length >= 1);
    expect(audits[0]).to.include({ outcome: 'unauthorized', code: 'ERR_UNAUTHORIZED', principal: '' });
    expect(audits[0]!.remoteAddress).to.equal('127.0.0.1');
    const ok = await client({ token: 's3cret' });
    expect(ok.closed).to.equal(false);
  });

  it('rules per principal, and a function rule cannot open loopback', async () => {
    const { target, port } = await echoServer();
    const { server, client } = await startServer({ authenticate: tokenAuth({ a: 'alice', b: 'bob' }) });
    createGateway(server, { allow: [{ principal: 'alice', allow: target }, { principal: ['bob'], allow: ({ port: p }) => p === port }] });
    const alice = await client({ token: 'a' });
    const bob = await client({ token: 'b' });
    const conn = await alice.dialTcp(target);
    conn.end('x');
    expect((await readAll(conn)).toString()).to.equal('x');
    const err = await rejection(bob.dialTcp(target));
    expect(err.code).to.equal('ERR_FORBIDDEN_TARGET');
    expect(err.message).to.match(/loopback/);
    const err2 = await rejection(bob.dialTcp('10.9.9.9:1'));
    expect(err2.message).to.equal('target 10.9.9.9:1 is not allowed for principal bob');
    await until(() => audits.length === 3);
    expect(audits.map((a) => a.principal)).to.deep.equal(['alice', 'bob', 'bob']);
  });

  it('refused, unresolvable and non-gateway targets have their own codes', async () => {
    const closedPort = await freePort();
    const { server, client } = await startServer();
    createGateway(server, { allow: [`127.0.0.1:${closedPort}`, 'no-such-host.invalid:80'] });
    const session = await client();
    expect(await rejection(session.dialTcp(`127.0.0.1:${closedPort}`))).to.include({ code: 'ERR_TARGET_REFUSED', status: 502 });
    expect(await rejection(session.dialTcp('no-such-host.invalid:80'))).to.include({ code: 'ERR_TARGET_UNREACHABLE', status: 502 });
    expect(await rejection(session.dialTcp('no port'))).to.include({ code: 'ERR_INVALID_ARGUMENT' });
    await until(() => audits.length === 2);
    expect(audits.map((a) => a.outcome)).to.deep.equal(['refused', 'unreachable']);

    const plain = await startServer();
    const s2 = await plain.client();
    const err = await rejection(s2.dialTcp(`127.0.0.1:${closedPort}`));
    expect(err.code).to.equal('ERR_FORBIDDEN_TARGET');
    expect(err.message).to.equal('this server is not a TCP gateway');
  });

  it('a target that never answers the SYN is ERR_TARGET_TIMEOUT (504) after connectTimeoutMs, audited; the session lives on', async () => {
    // A real black hole on loopback: a socket listening with a backlog of 0 that never accepts.
    // Once one connection fills its queue, the kernel drops further SYNs, so connects hang.
    const hole = spawn('python3', ['-c', 'import socket,sys\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\nsys.stdin.read()'], { stdio: ['pipe', 'pipe', 'inherit'] });
    onTeardown(() => void hole.kill('SIGKILL'));
    const port = Number(await new Promise<string>((resolve) => createInterface({ input: hole.stdout! }).once('line', resolve)));
    const filler = net.connect(port, '127.0.0.1');
    onTeardown(() => void filler.destroy());
    await new Promise((resolve) => filler.once('connect', resolve));
    const target = `127.0.0.1:${port}`;
    const { server, client } = await startServer();
    createGateway(server, { allow: [target], connectTimeoutMs: 400 });
    const session = await client();
    const started = Date.now();
    const err = await rejection(session.dialTcp(target));
    expect(err).to.include({ code: 'ERR_TARGET_TIMEOUT', status: 504 });
    expect(Date.now() - started).to.be.within(350, 5000);
    await until(() => audits.length === 1);
    expect(audits[0]).to.include({ outcome: 'timeout', target });
    expect(server.stats().tcpConnections).to.equal(0);
    const inbox = server.channel<string>('after-timeout', 1);
    await session.channel<string>('after-timeout').send('alive');
    expect(await inbox.receive()).to.equal('alive');
  });

  it('stats count tunnel bytes as they go, open connections included, and once only after they close', async () => {
    const MiB = 1024 * 1024;
    let targetSocket: net.Socket | undefined;
    const { target } = await tcpServer((socket) => {
      targetSocket = socket;
      socket.write(Buffer.alloc(4 * MiB, 1)); // and stays open
    });
    const { server, session, local } = await forwardedTo(target);
    let got = 0;
    local.on('data', (c: Buffer) => (got += c.length));
    local.write(Buffer.alloc(1000, 2));
    await until(() => got === 4 * MiB, 10_000, 'all 4 MiB at the local socket');
    // the connection is still open: the counts are already there
    expect(server.stats().tcpConnections).to.equal(1);
    expect(server.stats().tcpBytesIn).to.equal(4 * MiB);
    await until(() => server.stats().tcpBytesOut === 1000, 5000, 'the 1000 bytes at the target');
    expect(session.stats().tcpBytesOut).to.equal(4 * MiB);
    expect(session.stats().tcpBytesIn).to.equal(1000);
    local.end();
    targetSocket!.end();
    await until(() => server.stats().tcpConnections === 0 && session.stats().tcpConnections === 0, 5000, 'closed');
    expect(server.stats()).to.include({ tcpBytesIn: 4 * MiB, tcpBytesOut: 1000 });
    expect(session.stats()).to.include({ tcpBytesIn: 1000, tcpBytesOut: 4 * MiB });
  });

  it('a forwarded connection the gateway refuses resets the local socket and says why', async () => {
    const { server, client } = await startServer();
    createGateway(server, { allow: [] });
    const session = await client();
    const fw = await session.forward({ target: '10.0.0.1:5432' });
    onTeardown(() => fw.close());
    const why = new Promise<Error>((resolve) => fw.once('connectionError', resolve));
    const local = await localConnect(fw.address.port);
    local.write('hello?');
    const closed = new Promise<void>((resolve) => local.once('close', () => resolve()));
    expect((await why) as Error & { code: string }).to.include({ code: 'ERR_FORBIDDEN_TARGET' });
    await closed;
  });

  it('caps connections per session (ERR_LIMIT) and frees the slot on close', async () => {
    const { target } = await echoServer();
    const { server, client } = await startServer();
    createGateway(server, { allow: [target], maxConnectionsPerSession: 2 });
    const session = await client();
    const a = await session.dialTcp(target);
    const b = await session.dialTcp(target);
    expect(await rejection(session.dialTcp(target))).to.include({ code: 'ERR_LIMIT', status: 429 });
    const other = await client();
    (await other.dialTcp(target)).destroy();
    a.end();
    await readAll(a);
    const c = await session.dialTcp(target);
    b.destroy();
    c.destroy();
    await until(() => audits.some((e) => e.outcome === 'limit'));
  });

  it('caps connections per principal over its sessions', async () => {
    const { target } = await echoServer();
    const { server, client } = await startServer({ authenticate: tokenAuth({ t: 'carol' }) });
    createGateway(server, { allow: [target], maxConnectionsPerPrincipal: 1 });
    const s1 = await client({ token: 't' });
    const s2 = await client({ token: 't' });
    const a = await s1.dialTcp(target);
    const err = await rejection(s2.dialTcp(target));
    expect(err.code).to.equal('ERR_LIMIT');
    expect(err.message).to.match(/principal has 1 TCP connections open/);
    a.destroy();
  });

  it('an idle connection is reset after idleTimeoutMs, and audited as such', async () => {
    const { target } = await echoServer();
    const { server, client } = await startServer();
    createGateway(server, { allow: [target], idleTimeoutMs: 200 });
    const session = await client();
    const conn = await session.dialTcp(target);
    conn.write('a');
    const errored = new Promise<Error | undefined>((resolve) => {
      conn.once('error', resolve);
      conn.once('close', () => resolve(undefined));
    });
    conn.resume();
    const err = await errored;
    expect(err, 'the tunnel ends with an error, not a clean end').to.not.equal(undefined);
    await until(() => audits.length === 1);
    expect(audits[0]).to.include({ outcome: 'idle-timeout', code: 'ERR_TIMEOUT', bytesToTarget: 1, bytesFromTarget: 1 });
  });

  it('a reset by the target resets the local socket (not a clean end)', async () => {
    const { target } = await tcpServer((socket) => socket.once('data', () => socket.resetAndDestroy()));
    const { local } = await forwardedTo(target);
    const outcome = new Promise<string>((resolve) => {
      local.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      local.once('end', () => resolve('end'));
    });
    local.resume();
    local.write('boom');
    expect(await outcome).to.equal('ECONNRESET');
    await until(() => audits.length === 1);
    expect(audits[0]!.outcome).to.equal('reset');
  });

  it('closing the session resets its tunnels; the server forgets them', async () => {
    const { server: tcp, target } = await echoServer();
    const { server, client } = await startServer();
    createGateway(server, { allow: [target] });
    const session = await client();
    const conns: Duplex[] = [];
    for (let i = 0; i < 3; i++) conns.push(await session.dialTcp(target));
    for (const c of conns) c.on('error', () => undefined);
    await until(() => server.stats().tcpConnections === 3);
    const fw = await session.forward({ target });
    const listening = fw.address.port;
    await session.close();
    await until(() => server.stats().tcpConnections === 0, 5000, 'server tunnels to close');
    // the forwarder went with its session
    await until(() => fw.connections === 0);
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(listening, '127.0.0.1');
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      s.once('connect', () => resolve('connected'));
    });
    expect(refused).to.equal('ECONNREFUSED');
    await untilNoConnections(tcp);
    expect(session.stats().tcpConnections).to.equal(0);
  });

  it('leaks nothing: 300 forwarded connections opened and closed, counters back to baseline', async () => {
    const { server: tcp, target } = await echoServer();
    const { server, client } = await startServer();
    createGateway(server, { allow: [target] });
    const session = await client();
    const fw = await session.forward({ target });
    onTeardown(() => fw.close());
    const baseClient = session.stats();
    const baseServer = server.stats();
    for (let batch = 0; batch < 15; batch++) {
      await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const local = await localConnect(fw.address.port);
          const text = `message ${batch}.${i}`;
          local.end(text);
          expect((await readAll(local)).toString()).to.equal(text);
        }),
      );
    }
    await until(() => server.stats().tcpConnections === 0 && session.stats().tcpConnections === 0 && fw.connections === 0, 5000, 'tunnels to close');
    await until(() => server.stats().streams === baseServer.streams && session.stats().streams === baseClient.streams, 5000, 'streams back to baseline');
    await untilNoConnections(tcp);
    const s = server.stats();
    const c = session.stats();
    expect(s.tcpBytesOut - baseServer.tcpBytesOut).to.equal(c.tcpBytesIn - baseClient.tcpBytesIn);
    expect(s.tcpBytesIn - baseServer.tcpBytesIn).to.equal(c.tcpBytesOut - baseClient.tcpBytesOut);
    expect(c.tcpBytesIn - baseClient.tcpBytesIn).to.be.greaterThan(300 * 10);
    await until(() => audits.length === 300);
    expect(audits.every((a) => a.outcome === 'closed')).to.equal(true);
  });
});

describe('TCP gateway mounted on Express', function () {
  this.timeout(30_000);
  afterEach(teardown);

  for (const transport of ['h2', 'ws'] as const) {
    it(`the app's auth names the principal the gateway policy sees (${transport})`, async () => {
      const { target } = await countThenAnswerServer();
      const certs = await testCertificates();
      const server = createServer({});
      createGateway(server, { allow: [{ principal: 'alice', allow: target }] });
      const app = express();
      app.use('/netchan', (req, res, next) => {
        const user = { 'Bearer a': 'alice', 'Bearer b': 'bob' }[req.get('authorization') ?? ''];
        if (!user) return void res.status(401).send('who are you?');
        res.locals.principal = user;
        next();
      }, netchan(server));
      const web = http2.createSecureServer({ key: certs.key, cert: certs.cert, allowHTTP1: true, minVersion: 'TLSv1.3' }, app as never);
      attach(web, app);
      await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
      onTeardown(async () => {
        await server.close();
        await new Promise<void>((r) => web.close(() => r()));
      });
      const url = `https://localhost:${(web.address() as AddressInfo).port}/netchan`;
      const alice = await connect(url, { ca: certs.caCert, token: 'a', transport });
      onTeardown(() => alice.close());
      expect(alice.transport).to.equal(transport);
      const conn = await alice.dialTcp(target);
      conn.end('through express');
      expect((await readAll(conn)).toString()).to.equal('got 15 bytes');
      const bob = await connect(url, { ca: certs.caCert, token: 'b', transport });
      onTeardown(() => bob.close());
      const err = await rejection(bob.dialTcp(target));
      expect(err.code).to.equal('ERR_FORBIDDEN_TARGET');
      expect(err.message).to.match(/not allowed for principal bob|loopback/);
      expect(await rejection(connect(url, { ca: certs.caCert, token: 'nope', transport }))).to.include({ code: 'ERR_UNAUTHORIZED' });
    });
  }
});

function connectionCount(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

async function untilNoConnections(server: net.Server): Promise<void> {
  const deadline = Date.now() + 5000;
  while ((await connectionCount(server)) > 0) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the target connections to close');
    await new Promise((r) => setTimeout(r, 10));
  }
}
