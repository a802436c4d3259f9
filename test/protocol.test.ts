import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { Channel } from '../lib/core/channel.js';
import { Codec, type ReferenceHooks } from '../lib/wire/codec.js';
import { FrameDecoder, FrameType, encodeFrame } from '../lib/wire/frames.js';
import '../lib/session/session.js';

interface Step {
  step: string;
  hex: string;
}
const steps = JSON.parse(readFileSync(new URL('./vectors/exchange.json', import.meta.url), 'utf8')) as Step[];

function frames(hex: string): Array<{ type: number; payload: Buffer }> {
  const out: Array<{ type: number; payload: Buffer }> = [];
  const decoder = new FrameDecoder((type, payload) => out.push({ type, payload: Buffer.from(payload) }));
  decoder.push(Buffer.from(hex, 'hex'));
  decoder.end();
  return out;
}

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

describe('docs/PROTOCOL.md §5.4: the worked request/reply exchange (test/vectors/exchange.json)', () => {
  const codec = new Codec();

  it('the request value carries the reply channel as extension 0x10 {o: "c", id: "c2"}', () => {
    const hooks: ReferenceHooks = { encodeReference: () => ({ o: 'c', id: 'c2' }), decodeReference: (_kind, data) => ({ decoded: data }) };
    const bytes = encodeFrame(FrameType.VALUE, codec.encode({ n: 7, reply: new Channel() }, hooks));
    expect(Buffer.from(bytes).toString('hex')).to.equal(steps[0]!.hex);
    const [frame] = frames(steps[0]!.hex);
    expect(frame!.type).to.equal(FrameType.VALUE);
    expect(codec.decode(frame!.payload, hooks)).to.deep.equal({ n: 7, reply: { decoded: { o: 'c', id: 'c2' } } });
  });

  it('ACK, VALUE 49 and CLOSE are the frames the text says', () => {
    expect(Buffer.from(encodeFrame(FrameType.ACK, u32(1))).toString('hex')).to.equal(steps[1]!.hex);
    expect(Buffer.from(encodeFrame(FrameType.VALUE, codec.encode(49))).toString('hex')).to.equal(steps[2]!.hex);
    expect(steps[3]!.hex).to.equal(steps[1]!.hex);
    expect(Buffer.from(encodeFrame(FrameType.CLOSE, new Uint8Array(0))).toString('hex')).to.equal(steps[4]!.hex);
    expect(frames(steps[2]!.hex).map((f) => codec.decode(f.payload))).to.deep.equal([49]);
  });

  it('the document shows every step of the vectors file', () => {
    const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');
    for (const s of steps) expect(doc, s.step).to.include(s.hex);
  });
});
