/**
 * The processes of bench/cluster.ts, forked by it: `cluster-peers.ts server <peer>` or
 * `cluster-peers.ts clients <peer>`. Certificates come from the environment (BENCH_KEY,
 * BENCH_CERT, BENCH_CA as PEM); BENCH_WINDOW is the number of tasks in flight per client.
 *
 * Every peer runs the same cluster echo: the server sends tasks
 * `{ id, name: 'task', payload: 'hello world', ts }`, each client sends every task it receives
 * straight back, and the server counts what it sent and received. Each client has WINDOW tasks
 * in flight: the raw peers, ws, gRPC and socket.io send WINDOW to every client at `go` and one
 * more for each echo; netchan's channels have capacity WINDOW, so each client's receive handle
 * prefetches WINDOW tasks and the server's `send` loop refills them as they are taken.
 *
 * server: answers `conns` (connections or sessions open), `go` (start sending) and `count`
 *   (sent, received, the time and the process's CPU time).
 * clients: `dial` opens `count` clients, `concurrency` at a time, and answers `dialed`; `cpu`
 *   answers the process's CPU time.
 */
import http2 from 'node:http2';
import https from 'node:https';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { Server as SocketIoServer, type Socket as SocketIoSocket } from 'socket.io';
import { io as socketIoClient, type Socket as SocketIoClientSocket } from 'socket.io-client';
import { WebSocket, WebSocketServer } from 'ws';
import { Codec } from '../lib/wire/codec.js';
import { FrameDecoder, FrameEncoder, FrameType } from '../lib/wire/frames.js';
import { dial, listen, type Dialer } from '../lib/index.js';
import { pool, serve, tell } from './children.js';

type Task = { id: number; name: string; payload: string; ts: number };

const key = process.env.BENCH_KEY as string;
const cert = process.env.BENCH_CERT as string;
const ca = process.env.BENCH_CA as string;
const WINDOW = Number(process.env.BENCH_WINDOW ?? 16);
const [role, peer] = process.argv.slice(2) as [string, string];
// netchan's own hardened codec, for every peer that takes a codec (socket.io has its own)
const codec = new Codec();
const encode = (v: unknown): Buffer => {
  const u = codec.encode(v);
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength);
};
const decode = (b: Uint8Array): unknown => codec.decode(b);

let nextId = 0;
const task = (): Task => ({ id: nextId++, name: 'task', payload: 'hello world', ts: Date.now() });

/** What a server implements; the counting and the messages to the parent are shared. */
interface EchoServer {
  port: number;
  connections(): number;
  /** Puts WINDOW tasks in flight for every client. */
  go(): void;
}
const counters = { sent: 0, received: 0 };
/** What the two-stream peer writes back after each chunk read: a count frame, as netchan's ACK. */
const ACK_FRAME = (() => {
  const enc = new FrameEncoder(64);
  enc.countFrame(FrameType.ACK, 1);
  return enc.take() as Buffer;
})();

// ---------------------------------------------------------------------------------------------
// servers

async function netchanServer(): Promise<EchoServer> {
  const server = await listen<Task>('127.0.0.1:0', { key, cert, capacity: WINDOW });
  void (async () => {
    for await (const _echo of server.receive) counters.received++;
  })();
  return {
    port: server.port,
    connections: () => server.server.stats().sessions,
    go() {
      void (async () => {
        for (;;) {
          await server.send.send(task());
          counters.sent++;
        }
      })();
    },
  };
}

/**
 * The server side of the framed echo on any byte stream: reads echoes from `wire` and answers
 * with one write per chunk read on `reply` (the same stream, or the tasks stream of a two-stream
 * client, which then also gets an acknowledgement frame back on `wire` after every chunk).
 */
function framedEcho(wire: Duplex, wires: Set<Duplex>, reply: Duplex = wire): void {
  wires.add(reply);
  reply.on('close', () => wires.delete(reply));
  wire.on('error', () => undefined);
  const enc = new FrameEncoder(4096);
  const decoder = new FrameDecoder((_type, payload) => {
    decode(payload);
    counters.received++;
    enc.frame(FrameType.VALUE, encode(task()));
    counters.sent++;
  });
  wire.on('data', (chunk: Buffer) => {
    decoder.push(chunk);
    const out = enc.take();
    if (out) reply.write(out);
    if (reply !== wire) wire.write(ACK_FRAME);
  });
}

function framedGo(wires: Set<Duplex>): void {
  for (const wire of wires) {
    const enc = new FrameEncoder(4096);
    for (let i = 0; i < WINDOW; i++) enc.frame(FrameType.VALUE, encode(task()));
    counters.sent += WINDOW;
    wire.write(enc.take() as Buffer);
  }
}

/** Listens on 127.0.0.1, a free port, with a backlog of 4096 (thousands of clients dial at once). */
async function listenLoopback(server: Pick<net.Server, 'listen' | 'address'>): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', 4096, resolve));
  return (server.address() as AddressInfo).port;
}

/** Raw TLS, the same codec, length-prefixed frames: the limit. */
async function rawTlsServer(): Promise<EchoServer> {
  const sockets = new Set<Duplex>();
  const server = tls.createServer({ key, cert, minVersion: 'TLSv1.3' }, (socket) => {
    socket.setNoDelay(true);
    framedEcho(socket, sockets);
  });
  return {
    port: await listenLoopback(server),
    connections: () => sockets.size,
    go: () => framedGo(sockets),
  };
}

/** Node's HTTP/2 over TLS as the raw HTTP/2 peers use it: netchan's stream window, no Nagle. */
function rawH2SecureServer(): http2.Http2SecureServer {
  const server = http2.createSecureServer({ key, cert, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024 } });
  server.on('connection', (socket: tls.TLSSocket) => socket.setNoDelay(true));
  return server;
}

/** The same frames on one raw HTTP/2 stream per client (Node's http2, TLS): what HTTP/2 costs. */
async function rawH2Server(): Promise<EchoServer> {
  const streams = new Set<Duplex>();
  const server = rawH2SecureServer();
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    framedEcho(stream, streams);
  });
  return {
    port: await listenLoopback(server),
    connections: () => streams.size,
    go: () => framedGo(streams),
  };
}

/**
 * The same frames on two raw HTTP/2 streams per client, as netchan lays out a `dial` client: tasks
 * on one stream, echoes on the other, and after every chunk read a 9-byte acknowledgement frame
 * back on the stream it came from (netchan's ACK or CREDIT). No channel semantics: what this
 * stream layout costs on Node's HTTP/2.
 */
async function rawH2PairServer(): Promise<EchoServer> {
  const downs = new Set<Duplex>();
  const pending = new WeakMap<object, { down?: Duplex; up?: Duplex }>();
  const server = rawH2SecureServer();
  server.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.on('error', () => undefined);
    const pair = pending.get(stream.session!) ?? {};
    pending.set(stream.session!, pair);
    if (headers[':path'] === '/down') pair.down = stream;
    else pair.up = stream;
    if (!pair.down || !pair.up) return;
    pair.down.on('data', () => undefined); // the client's acknowledgements
    framedEcho(pair.up, downs, pair.down);
  });
  return {
    port: await listenLoopback(server),
    connections: () => downs.size,
    go: () => framedGo(downs),
  };
}

/** ws over TLS, the same codec, one binary message per task. */
async function wsServer(): Promise<EchoServer> {
  const web = https.createServer({ key, cert, minVersion: 'TLSv1.3' });
  const wss = new WebSocketServer({ server: web, perMessageDeflate: false });
  const sockets = new Set<WebSocket>();
  wss.on('connection', (ws) => {
    sockets.add(ws);
    ws.on('close', () => sockets.delete(ws));
    ws.on('error', () => undefined);
    ws.on('message', (data: Buffer) => {
      decode(data);
      counters.received++;
      ws.send(encode(task()));
      counters.sent++;
    });
  });
  return {
    port: await listenLoopback(web),
    connections: () => sockets.size,
    go() {
      for (const ws of sockets) {
        for (let i = 0; i < WINDOW; i++) ws.send(encode(task()));
        counters.sent += WINDOW;
      }
    },
  };
}

/** A gRPC service without .proto: one bidi method whose messages go through the same codec. */
const echoService: grpc.ServiceDefinition = {
  echo: {
    path: '/netchan.bench.Cluster/Echo',
    requestStream: true,
    responseStream: true,
    requestSerialize: encode,
    requestDeserialize: decode,
    responseSerialize: encode,
    responseDeserialize: decode,
  },
};

async function grpcServer(): Promise<EchoServer> {
  const server = new grpc.Server();
  const calls = new Set<grpc.ServerDuplexStream<unknown, unknown>>();
  server.addService(echoService, {
    echo: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
      calls.add(call);
      call.on('data', () => {
        counters.received++;
        call.write(task());
        counters.sent++;
      });
      call.on('error', () => calls.delete(call));
      call.on('end', () => {
        calls.delete(call);
        call.end();
      });
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(key), cert_chain: Buffer.from(cert) }], false);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', credentials, (err, p) => (err ? reject(err) : resolve(p))));
  return {
    port,
    connections: () => calls.size,
    go() {
      for (const call of calls) {
        for (let i = 0; i < WINDOW; i++) call.write(task());
        counters.sent += WINDOW;
      }
    },
  };
}

/** socket.io over TLS, WebSocket transport only, its own (JSON) encoding of the same object. */
async function socketIoServer(): Promise<EchoServer> {
  const web = https.createServer({ key, cert, minVersion: 'TLSv1.3' });
  const io = new SocketIoServer(web, { transports: ['websocket'], serveClient: false, perMessageDeflate: false });
  const sockets = new Set<SocketIoSocket>();
  io.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('disconnect', () => sockets.delete(socket));
    socket.on('echo', () => {
      counters.received++;
      socket.emit('task', task());
      counters.sent++;
    });
  });
  return {
    port: await listenLoopback(web),
    connections: () => sockets.size,
    go() {
      for (const socket of sockets) {
        for (let i = 0; i < WINDOW; i++) socket.emit('task', task());
        counters.sent += WINDOW;
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// clients: each resolves once connected and echoes every task from then on

const secureContext = tls.createSecureContext({ ca, minVersion: 'TLSv1.3' });
const held: unknown[] = [];

async function netchanClient(port: number): Promise<void> {
  const c: Dialer<Task> = await dial<Task>(`127.0.0.1:${port}`, { ca });
  held.push(c);
  void (async () => {
    for await (const t of c.receive) await c.send.send(t);
  })().catch(() => undefined);
}

/**
 * The client side of the framed echo: one write per chunk read, on `reply` (the same stream, or
 * the echoes stream of a two-stream client, which then also acknowledges every chunk on `wire`).
 */
function framedEchoClient(wire: Duplex, reply: Duplex = wire): void {
  const enc = new FrameEncoder(4096);
  const decoder = new FrameDecoder((_type, payload) => enc.frame(FrameType.VALUE, encode(decode(payload))));
  wire.on('data', (chunk: Buffer) => {
    decoder.push(chunk);
    const out = enc.take();
    if (out) reply.write(out);
    if (reply !== wire) wire.write(ACK_FRAME);
  });
}

function rawTlsClient(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, secureContext, minVersion: 'TLSv1.3' }, () => {
      socket.off('error', reject);
      socket.on('error', () => undefined);
      held.push(socket);
      resolve();
    });
    socket.once('error', reject);
    socket.setNoDelay(true);
    framedEchoClient(socket);
  });
}

/** An HTTP/2 session over TLS to the raw HTTP/2 peers, with their window and no Nagle. */
function rawH2Connect(port: number): http2.ClientHttp2Session {
  return http2.connect(`https://127.0.0.1:${port}`, {
    createConnection: () => {
      const socket = tls.connect({ host: '127.0.0.1', port, secureContext, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3' });
      socket.setNoDelay(true);
      return socket;
    },
    settings: { initialWindowSize: 1024 * 1024 },
  });
}

/** Opens `paths` as POST streams on a new session; resolves once every one is answered. */
function rawH2Streams(port: number, paths: string[]): Promise<http2.ClientHttp2Stream[]> {
  return new Promise((resolve, reject) => {
    const session = rawH2Connect(port);
    session.once('error', reject);
    const streams = paths.map((path) => session.request({ ':method': 'POST', ':path': path }));
    let answered = 0;
    for (const stream of streams) {
      stream.once('error', reject);
      stream.once('response', () => {
        if (++answered < streams.length) return;
        session.off('error', reject);
        session.on('error', () => undefined);
        for (const s2 of streams) {
          s2.off('error', reject);
          s2.on('error', () => undefined);
        }
        held.push(session, ...streams);
        resolve(streams);
      });
    }
  });
}

async function rawH2Client(port: number): Promise<void> {
  const [stream] = await rawH2Streams(port, ['/']);
  framedEchoClient(stream!);
}

async function rawH2PairClient(port: number): Promise<void> {
  const [up, down] = await rawH2Streams(port, ['/up', '/down']);
  up!.on('data', () => undefined); // the server's acknowledgements
  framedEchoClient(down!, up);
}

function wsClient(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/`, { secureContext, perMessageDeflate: false } as WebSocket.ClientOptions);
    ws.once('open', () => {
      ws.off('error', reject);
      ws.on('error', () => undefined);
      held.push(ws);
      resolve();
    });
    ws.once('error', reject);
    ws.on('message', (data: Buffer) => ws.send(encode(decode(data))));
  });
}

const GrpcClient = grpc.makeGenericClientConstructor(echoService, 'Cluster');

function grpcClient(port: number): Promise<void> {
  const client = new GrpcClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(ca)), {
    // one connection per client, as with the other peers (grpc-js shares one per target otherwise)
    'grpc.use_local_subchannel_pool': 1,
    'grpc.ssl_target_name_override': 'localhost',
  });
  return new Promise((resolve, reject) => {
    client.waitForReady(Date.now() + 60_000, (err) => {
      if (err) return reject(err);
      const call = (client as unknown as { echo(): grpc.ClientDuplexStream<unknown, unknown> }).echo();
      call.on('data', (t: unknown) => call.write(t));
      call.on('error', () => undefined);
      held.push(client, call);
      resolve();
    });
  });
}

function socketIoClientOpen(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket: SocketIoClientSocket = socketIoClient(`https://127.0.0.1:${port}`, {
      transports: ['websocket'],
      forceNew: true, // a connection per client, not one shared Manager
      reconnection: false,
      ca,
    });
    socket.once('connect', () => {
      socket.off('connect_error', reject);
      held.push(socket);
      resolve();
    });
    socket.once('connect_error', reject);
    socket.on('task', (t: Task) => socket.emit('echo', t));
  });
}

// ---------------------------------------------------------------------------------------------

const servers: Record<string, () => Promise<EchoServer>> = {
  netchan: netchanServer,
  'raw-tls': rawTlsServer,
  'raw-h2': rawH2Server,
  'raw-h2-pair': rawH2PairServer,
  ws: wsServer,
  grpc: grpcServer,
  'socket.io': socketIoServer,
};
const clients: Record<string, (port: number) => Promise<void>> = {
  netchan: netchanClient,
  'raw-tls': rawTlsClient,
  'raw-h2': rawH2Client,
  'raw-h2-pair': rawH2PairClient,
  ws: wsClient,
  grpc: grpcClient,
  'socket.io': socketIoClientOpen,
};

if (role === 'server' && servers[peer]) {
  const server = await servers[peer]();
  serve({
    conns: () => tell({ type: 'conns', n: server.connections() }),
    go: () => server.go(),
    count: () => tell({ type: 'count', ...counters, atMs: performance.now(), cpu: process.cpuUsage() }),
  });
  tell({ type: 'ready', port: server.port });
} else if (role === 'clients' && clients[peer]) {
  const open = clients[peer];
  serve({
    dial: async (m) => {
      const { port, count, concurrency } = m as unknown as { port: number; count: number; concurrency: number };
      let failed = 0;
      const errors = new Map<string, number>();
      await pool(count, concurrency, async () => {
        try {
          await open(port);
        } catch (err) {
          failed++;
          const msg = (err as Error).message;
          errors.set(msg, (errors.get(msg) ?? 0) + 1);
        }
      });
      tell({ type: 'dialed', connected: count - failed, failed, errors: [...errors] });
    },
    cpu: () => tell({ type: 'cpu', cpu: process.cpuUsage() }),
  });
  tell({ type: 'ready' });
} else {
  console.error(`cluster-peers: unknown role or peer: ${role} ${peer}`);
  process.exit(2);
}
