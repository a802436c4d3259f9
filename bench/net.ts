/**
 * Network benchmark: netchan next to its references, servers in their own processes, one table.
 *   one-way: client `await send` in a loop into a capacity-1024 server channel
 *            vs raw TLS + netchan's codec + length-prefixed frames (no semantics: the limit),
 *            and the same with plain msgpackr (no validation)
 *   round trip, each next to a raw HTTP/2 stream ping-pong of the same run (runs alternate):
 *            ping/pong over two capacity-0 channels, the receive asked for before the send;
 *            the same written in the usual order, `await ping.send(x); await pong.receive()`,
 *            by default and with `pong` opened with `{ prefetch: 1 }`;
 *            request/reply with a fresh capacity-0 reply channel inside each request (the
 *            README's pattern; the server answers `await reply.send(…)` and drops the handle)
 * Run: npm run bench:net   (BENCH_MESSAGES, BENCH_ROUNDTRIPS, BENCH_RUNS to change the sizes)
 */
import http2 from 'node:http2';
import os from 'node:os';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { Packr } from 'msgpackr';
import { generateCertificates } from '../lib/transport/devcert.js';
import { Codec } from '../lib/wire/codec.js';
import { FrameDecoder, FrameEncoder, FrameType } from '../lib/wire/frames.js';
import { Channel, connect, type Session } from '../lib/index.js';
import { startPeer as start, stopPeer as stop } from './net-peer.js';
import { ratioRow, summarize } from './summary.js';

const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 1_000_000);
const ROUNDTRIPS = Number(process.env.BENCH_ROUNDTRIPS ?? 20_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const WARMUP_ROUNDTRIPS = Math.min(1000, Math.ceil(ROUNDTRIPS / 4));
const packr = new Packr({ useRecords: false });
const netchanCodec = new Codec();
type Encode = (v: unknown) => Uint8Array;
const encoders: Record<string, Encode> = { netchan: (v) => netchanCodec.encode(v), msgpackr: (v) => packr.pack(v) };
const message = (i: number) => ({ id: i, name: 'task', payload: 'hello world', ts: 1700000000000 });

const certs = await generateCertificates({ hosts: ['localhost', '127.0.0.1'] });

const startPeer = (peer: string, codecName = 'netchan') => start(peer, { BENCH_KEY: certs.key, BENCH_CERT: certs.cert, BENCH_CODEC: codecName });

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

/** µs per round trip of `once(i)`, after WARMUP_ROUNDTRIPS to warm up (1,000, fewer for short runs), on a session of its own. */
async function netchanRoundTrip(port: number, setup: (session: Session) => (i: number) => Promise<unknown>): Promise<number> {
  const session = await connect(`https://localhost:${port}/`, { ca: certs.caCert });
  const once = setup(session);
  for (let i = 0; i < WARMUP_ROUNDTRIPS; i++) await once(i);
  const start = process.hrtime.bigint();
  for (let i = 0; i < ROUNDTRIPS; i++) await once(i);
  const micros = Number(process.hrtime.bigint() - start) / 1e3 / ROUNDTRIPS;
  await session.close();
  return micros;
}

/** The round trips measured, each as a loop body. */
const roundTrips: Record<string, (session: Session) => (i: number) => Promise<unknown>> = {
  // the receive asked for first: the server's answer finds a receiver waiting
  receiveFirst: (session) => {
    const ping = session.channel<unknown>('ping');
    const pong = session.channel<unknown>('pong');
    return async (i) => {
      const p = pong.receive();
      await ping.send(message(i));
      return p;
    };
  },
  // the order people write it
  sendThenReceive: (session) => {
    const ping = session.channel<unknown>('ping');
    const pong = session.channel<unknown>('pong');
    return async (i) => {
      await ping.send(message(i));
      return pong.receive();
    };
  },
  // the same, the reply handle asking for its next value ahead (prefetch: 1, a standing credit)
  sendThenReceivePrefetch: (session) => {
    const ping = session.channel<unknown>('ping');
    const pong = session.channel<unknown>('pong', { prefetch: 1 });
    return async (i) => {
      await ping.send(message(i));
      return pong.receive();
    };
  },
  freshReply: (session) => {
    const square = session.channel<{ n: number; reply: Channel<number> }>('square');
    return async (i) => {
      const reply = new Channel<number>(0);
      await square.send({ n: i, reply });
      return reply.receive();
    };
  },
};

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
  for (let i = 0; i < WARMUP_ROUNDTRIPS; i++) await once(i);
  const start = process.hrtime.bigint();
  for (let i = 0; i < ROUNDTRIPS; i++) await once(i);
  const micros = Number(process.hrtime.bigint() - start) / 1e3 / ROUNDTRIPS;
  stream.close();
  client.close();
  return micros;
}

// one-way: every server up, the runs alternating between the peers
const oneWay: Record<'raw' | 'rawPlain' | 'rawH2' | 'netchan', number[]> = { raw: [], rawPlain: [], rawH2: [], netchan: [] };
{
  const servers = {
    raw: await startPeer('raw-tls'),
    rawPlain: await startPeer('raw-tls', 'msgpackr'),
    rawH2: await startPeer('raw-h2-sink'),
    netchan: await startPeer('netchan'),
  };
  const runs: Record<keyof typeof oneWay, (port: number) => Promise<number>> = {
    raw: (port) => rawTlsOneWay(port, encoders.netchan!),
    rawPlain: (port) => rawTlsOneWay(port, encoders.msgpackr!),
    rawH2: rawH2OneWay,
    netchan: netchanOneWay,
  };
  try {
    for (let r = 0; r < RUNS; r++) {
      const order = Object.keys(runs) as (keyof typeof oneWay)[];
      for (const name of r % 2 === 0 ? order : order.reverse()) oneWay[name].push(await runs[name](servers[name].port));
    }
  } finally {
    await Promise.all(Object.values(servers).map((s) => stop(s.child)));
  }
}
const [raw, rawPlain, rawH2, nc] = [oneWay.raw, oneWay.rawPlain, oneWay.rawH2, oneWay.netchan].map((xs) => Math.max(...xs)) as [number, number, number, number];

// the round trips: both servers up, the runs alternating between the raw stream and each netchan row
const rtt: Record<'raw' | keyof typeof roundTrips, number[]> = { raw: [], receiveFirst: [], sendThenReceive: [], sendThenReceivePrefetch: [], freshReply: [] };
{
  const rawServer = await startPeer('raw-h2');
  const netchanServer = await startPeer('netchan');
  try {
    for (let r = 0; r < RUNS; r++) {
      rtt.raw.push(await rawH2RoundTrip(rawServer.port));
      for (const [name, setup] of Object.entries(roundTrips)) rtt[name as keyof typeof roundTrips].push(await netchanRoundTrip(netchanServer.port, setup));
    }
  } finally {
    await Promise.all([stop(rawServer.child), stop(netchanServer.child)]);
  }
}
const fastest = (xs: number[]) => Math.min(...xs);
const range = (xs: number[]) => `${fastest(xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`;
const rawRtt = fastest(rtt.raw);
const rttRows: [string, keyof typeof roundTrips, number][] = [
  ['round trip: ping/pong channels (capacity 0), receive asked before the send, µs', 'receiveFirst', 1.3],
  ['round trip: `await ping.send(x); await pong.receive()` (capacity 0), µs', 'sendThenReceive', 1.3],
  ['the same, `pong` opened with `{ prefetch: 1 }` (a standing credit), µs', 'sendThenReceivePrefetch', 1.3],
  ['request/reply, a fresh capacity-0 reply channel in each request, µs', 'freshReply', 2],
];

console.log(`netchan network benchmark — Node ${process.version}, ${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, ${os.platform()} ${os.release()}`);
console.log(`servers in separate processes on 127.0.0.1, TLS 1.3; ${MESSAGES} one-way messages, ${ROUNDTRIPS} round trips; best of ${RUNS} (range over the runs in brackets)`);
console.log('');
console.log('| workload | netchan | reference | ratio | target |');
console.log('|---|---:|---:|---:|---:|');
const mRange = (xs: number[]) => `${(Math.min(...xs) / 1e6).toFixed(3)}–${(Math.max(...xs) / 1e6).toFixed(3)}`;
console.log(`| one-way, one channel (capacity 1024), msg/s | ${(nc / 1e6).toFixed(3)} M (${mRange(oneWay.netchan)}) | raw TLS, same framing and codec: ${(raw / 1e6).toFixed(3)} M (${mRange(oneWay.raw)}) | ${(nc / raw).toFixed(2)} × | |`);
console.log(`| (same, reference with plain msgpackr: no validation) | | ${(rawPlain / 1e6).toFixed(3)} M (${mRange(oneWay.rawPlain)}) | ${(nc / rawPlain).toFixed(2)} × | |`);
console.log(`| (same, reference on one raw HTTP/2 stream: same framing and codec) | | ${(rawH2 / 1e6).toFixed(3)} M (${mRange(oneWay.rawH2)}) | ${(nc / rawH2).toFixed(2)} × | ≥ 0.8 × |`);
for (const [label, name, target] of rttRows) {
  console.log(`| ${label} | ${fastest(rtt[name]).toFixed(1)} (${range(rtt[name])}) | raw HTTP/2 stream ping-pong: ${rawRtt.toFixed(1)} (${range(rtt.raw)}) | ${(fastest(rtt[name]) / rawRtt).toFixed(2)} × | ≤ ${target} × |`);
}
const micros = (n: number) => `${n.toFixed(0)} µs`;
summarize([
  ratioRow('one channel one-way, small messages', nc, { label: 'one raw HTTP/2 stream', value: rawH2 }, (n) => `${(n / 1e6).toFixed(3)} M msg/s`, { min: 0.8 }),
  ...rttRows.map(([label, name, target]) =>
    ratioRow(label.replace(/, µs$/, ''), fastest(rtt[name]), { label: 'raw HTTP/2 ping-pong', value: rawRtt }, micros, { max: target }),
  ),
]);
process.exit(0);
