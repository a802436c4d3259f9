/**
 * Pumps that honour write backpressure (docs/PROTOCOL.md §5.2): one channel stream on an
 * in-memory byte stream, turn by turn.
 */
import { Duplex } from 'node:stream';
import { expect } from 'chai';
import { Channel } from '../lib/index.js';
import { ChannelExporter, RemoteChannel } from '../lib/channel-stream.js';
import { Codec } from '../lib/codec.js';
import { FramedStream, Flusher, TURN_BYTES } from '../lib/framed-stream.js';
import { FrameDecoder, FrameType } from '../lib/frames.js';
import { emptyStats, type StreamContext } from '../lib/stream-context.js';

const codec = new Codec();
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

// ---- one channel stream on an in-memory byte stream: the pumps and the window, turn by turn ----

/** A byte stream that takes every write at once and keeps it: only the turn budget holds writers back. */
function sinkStream(): { stream: Duplex; written: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Duplex({
    writableHighWaterMark: 1 << 30,
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  return { stream, written: () => Buffer.concat(chunks) };
}

function framesIn(bytes: Buffer): { type: number; payload: Buffer }[] {
  const out: { type: number; payload: Buffer }[] = [];
  new FrameDecoder((type, payload) => out.push({ type, payload: Buffer.from(payload) })).push(bytes);
  return out;
}

function memoryContext(): StreamContext {
  return { encode: (v) => codec.encode(v), decode: (b) => codec.decode(b), counters: emptyStats() };
}

const placeholder = { onFrame() {}, onStreamEnd() {}, onStreamError() {}, onStreamClose() {} };

function nextTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

describe('channel stream pumps and windows, on an in-memory stream', () => {
  const big = (i: number) => `${i}:${'x'.repeat(1024)}`;

  it('regression: the owner serves a whole receive window over several turns, not in one synchronous run', async () => {
    const { stream, written } = sinkStream();
    const ctx = memoryContext();
    const fs = new FramedStream(stream, new Flusher(), placeholder, 1 << 20, ctx.counters);
    const ch = new Channel<string>(4096);
    for (let i = 0; i < 4096; i++) ch.trySend(big(i));
    const ex = new ChannelExporter(fs, ctx, ch as Channel<unknown>, 'c1', () => undefined);
    fs.setSink(ex);
    ex.onFrame(FrameType.CREDIT, u32(4096));
    const firstTurn = ctx.counters.valuesOut;
    expect(firstTurn, 'values framed in the first turn').to.be.at.most(Math.ceil(TURN_BYTES / 1024) + 1);
    let turns = 1;
    for (; ctx.counters.valuesOut < 4096 && turns < 1000; turns++) await nextTurn();
    expect(ctx.counters.valuesOut).to.equal(4096);
    expect(turns, 'turns it took').to.be.greaterThan(4);
    await nextTurn();
    const values = framesIn(written()).filter((f) => f.type === FrameType.VALUE).map((f) => codec.decode(f.payload));
    expect(values).to.deep.equal(Array.from({ length: 4096 }, (_, i) => big(i)));
  });

  it('regression: a remote handle writes a queue of sends over several turns, not in one synchronous run', async () => {
    const { stream, written } = sinkStream();
    const ctx = memoryContext();
    const fs = new FramedStream(stream, new Flusher(), placeholder, 1 << 20, ctx.counters);
    const rc = new RemoteChannel<string>(fs, ctx, 'c1', {}, () => undefined);
    fs.setSink(rc);
    rc.open({ capacity: 4096, credits: 4096 });
    const sends: Promise<void>[] = [];
    for (let i = 0; i < 4096; i++) sends.push(rc.send(big(i)));
    expect(ctx.counters.valuesOut, 'values framed in the first turn').to.be.at.most(Math.ceil(TURN_BYTES / 1024) + 1);
    await Promise.all(sends);
    expect(ctx.counters.valuesOut).to.equal(4096);
    await nextTurn();
    const values = framesIn(written()).filter((f) => f.type === FrameType.VALUE).map((f) => codec.decode(f.payload));
    expect(values).to.deep.equal(Array.from({ length: 4096 }, (_, i) => big(i)));
  });
});
