/**
 * Network benchmark: netchan next to its references, servers in their own processes, one table.
 *   one-way: client `await send` in a loop into a capacity-1024 server channel
 *            vs raw TLS + netchan's codec + length-prefixed frames (no semantics: the limit),
 *            and the same with plain msgpackr (no validation)
 *   round trip: ping/pong over two capacity-0 channels vs a raw HTTP/2 stream ping-pong
 * Run: npm run bench:net   (BENCH_MESSAGES, BENCH_ROUNDTRIPS, BENCH_RUNS to change the sizes)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http2 from 'node:http2';
import os from 'node:os';
import tls from 'node:tls';
import { createInterface } from 'node:readline';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import { generateCertificates } from '../lib/transport/devcert.js';
import { Codec } from '../lib/wire/codec.js';
import { FrameDecoder, FrameEncoder, FrameType } from '../lib/wire/frames.js';
import { Channel, connect } from '../lib/index.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 1_000_000);
const ROUNDTRIPS = Number(process.env.BENCH_ROUNDTRIPS ?? 20_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const packr = new Packr({ useRecords: false });
const netchanCodec = new Codec();
type Encode = (v: unknown) => Uint8Array;
const encoders: Record<string, Encode> = { netchan: (v) => netchanCodec.encode(v), msgpackr: (v) => packr.pack(v) };
const message = (i: number) => ({ id: i, name: 'task', payload: 'hello world', ts: 1700000000000 });

const certs = await generateCertificates({ hosts: ['localhost', '127.0.0.1'] });

async function startPeer(peer: string, codecName = 'netchan'): Promise<{ port: number; child: ChildProcess }> {
  const tsx = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url));
  const child = spawn(tsx, [fileURLToPath(new URL('./net-server.ts', import.meta.url)), peer], {
    env: { ...process.env, BENCH_KEY: certs.key, BENCH_CERT: certs.cert, BENCH_CODEC: codecName },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const rl = createInterface({ input: child.stdout! });
  const line = await new Promise<string>((resolve, reject) => {
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${peer} server exited with ${code}`)));
  });
  return { port: (JSON.parse(line) as { port: number }).port, child };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.stdin!.end();
    setTimeout(() => child.kill('SIGKILL'), 2000).unref();
  });
}

async function netchanOneWay(port: number): Promise<number> {
  const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert });
  const sink = session.channel<unknown>('sink');
  const control = session.channel<unknown>('control');
  // warm up
  for (let i = 0; i < 10_000; i++) await sink.send(message(i));
  let reply = new Channel<number>(1);
  await control.send({ expect: 10_000, reply });
  await reply.receive();
  const start = process.hrtime.bigint();
  for (let i = 0; i < MESSAGES; i++) await sink.send(message(i));
  reply = new Channel<number>(1);
  await control.send({ expect: 10_000 + MESSAGES, reply });
  const got = await reply.receive();
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  if (got < 10_000 + MESSAGES) throw new Error('netchan lost messages');
  await session.close();
  return MESSAGES / seconds;
}

/**
 * The raw one-way workload on any byte stream: 10,000 warm-up values, then MESSAGES more, frames
 * coalesced into 64 KiB writes that honour backpressure; the peer answers once it counted them.
 */
function rawOneWay(wire: Duplex, encode: Encode, done: () => void): Promise<number> {
  return new Promise((resolve, reject) => {
    wire.on('error', reject);
    let start = 0n;
    let phase = 0;
    const produce = (count: number, expect: number) => {
      let i = 0;
      const enc = new FrameEncoder(64 * 1024);
      const step = () => {
        while (i < count) {
          enc.frame(FrameType.VALUE, encode(message(i++)));
          if (enc.length >= 64 * 1024 && !wire.write(enc.take() as Buffer)) {
            wire.once('drain', step);
            return;
          }
        }
        enc.frame(FrameType.CREDIT, encode({ expect }));
        wire.write(enc.take() as Buffer);
      };
      step();
    };
    const decoder = new FrameDecoder(() => {
      if (phase === 0) {
        phase = 1;
        start = process.hrtime.bigint();
        produce(MESSAGES, 10_000 + MESSAGES);
      } else {
        const seconds = Number(process.hrtime.bigint() - start) / 1e9;
        done();
        resolve(MESSAGES / seconds);
      }
    });
    wire.on('data', (c: Buffer) => decoder.push(c));
    produce(10_000, 10_000);
  });
}

/** Raw TLS: the limit, with no channel semantics. */
function rawTlsOneWay(port: number, encode: Encode): Promise<number> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: certs.caCert, servername: 'localhost', minVersion: 'TLSv1.3' });
  return rawOneWay(socket, encode, () => socket.end());
}

/** The same on one raw HTTP/2 stream: what HTTP/2 itself costs. */
function rawH2OneWay(port: number): Promise<number> {
  const client = http2.connect(`https://localhost:${port}`, { ca: certs.caCert, minVersion: 'TLSv1.3', settings: { initialWindowSize: 1024 * 1024 } });
  client.on('error', () => undefined); // reported through the stream
  const stream = client.request({ ':method': 'POST', ':path': '/' });
  return rawOneWay(stream, encoders.netchan!, () => {
    stream.close();
    client.close();
  });
}

async function netchanRoundTrip(port: number): Promise<number> {
  const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert });
  const ping = session.channel<unknown>('ping');
  const pong = session.channel<unknown>('pong');
  for (let i = 0; i < 1000; i++) {
    await ping.send(i);
    await pong.receive();
  }
  const start = process.hrtime.bigint();
  for (let i = 0; i < ROUNDTRIPS; i++) {
    const p = pong.receive();
    await ping.send(message(i));
    await p;
  }
  const micros = Number(process.hrtime.bigint() - start) / 1e3 / ROUNDTRIPS;
  await session.close();
  return micros;
}

async function rawH2RoundTrip(port: number): Promise<number> {
  const client = http2.connect(`https://localhost:${port}`, { ca: certs.caCert, minVersion: 'TLSv1.3' });
  const stream = client.request({ ':method': 'POST', ':path': '/' });
  let waiting: (() => void) | null = null;
  const decoder = new FrameDecoder(() => waiting?.());
  stream.on('data', (c: Buffer) => decoder.push(c));
  const once = (i: number) =>
    new Promise<void>((resolve) => {
      waiting = resolve;
      const enc = new FrameEncoder(64);
      enc.frame(FrameType.VALUE, netchanCodec.encode(message(i)));
      stream.write(enc.take() as Buffer);
    });
  for (let i = 0; i < 1000; i++) await once(i);
  const start = process.hrtime.bigint();
  for (let i = 0; i < ROUNDTRIPS; i++) await once(i);
  const micros = Number(process.hrtime.bigint() - start) / 1e3 / ROUNDTRIPS;
  stream.close();
  client.close();
  return micros;
}

async function best(peer: string, run: (port: number) => Promise<number>, higherIsBetter: boolean, codecName = 'netchan'): Promise<number> {
  const { port, child } = await startPeer(peer, codecName);
  const results: number[] = [];
  try {
    for (let r = 0; r < RUNS; r++) results.push(await run(port));
  } finally {
    await stop(child);
  }
  return higherIsBetter ? Math.max(...results) : Math.min(...results);
}

const raw = await best('raw-tls', (port) => rawTlsOneWay(port, encoders.netchan!), true);
const rawPlain = await best('raw-tls', (port) => rawTlsOneWay(port, encoders.msgpackr!), true, 'msgpackr');
const rawH2 = await best('raw-h2-sink', rawH2OneWay, true);
const nc = await best('netchan', netchanOneWay, true);
const rawRtt = await best('raw-h2', rawH2RoundTrip, false);
const ncRtt = await best('netchan', netchanRoundTrip, false);

console.log(`netchan network benchmark — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}`);
console.log(`servers in separate processes on 127.0.0.1, TLS 1.3; ${MESSAGES} one-way messages, ${ROUNDTRIPS} round trips; best of ${RUNS}`);
console.log('');
console.log('| workload | netchan | reference | ratio | target |');
console.log('|---|---:|---:|---:|---:|');
console.log(`| one-way, one channel (capacity 1024), msg/s | ${(nc / 1e6).toFixed(3)} M | raw TLS, same framing and codec: ${(raw / 1e6).toFixed(3)} M | ${(nc / raw).toFixed(2)} × | ≥ 0.8 × |`);
console.log(`| (same, reference with plain msgpackr: no validation) | | ${(rawPlain / 1e6).toFixed(3)} M | ${(nc / rawPlain).toFixed(2)} × | |`);
console.log(`| (same, reference on one raw HTTP/2 stream: same framing and codec) | | ${(rawH2 / 1e6).toFixed(3)} M | ${(nc / rawH2).toFixed(2)} × | |`);
console.log(`| round trip (ping/pong channels), µs | ${ncRtt.toFixed(1)} | raw HTTP/2 stream ping-pong: ${rawRtt.toFixed(1)} | ${(ncRtt / rawRtt).toFixed(2)} × | ≤ 1.3 × |`);
process.exit(0);
