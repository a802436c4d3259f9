import { readFileSync } from 'node:fs';
import { expect } from 'chai';
import fc from 'fast-check';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameEncoder,
  FrameType,
  encodeFrame,
  type FrameDecoderOptions,
} from '../lib/wire/frames.js';
import { ErrorCodes, NetchanError } from '../lib/core/errors.js';

interface VectorFrame {
  type: number;
  payload: string;
}

interface Vector {
  name: string;
  hex: string;
  frames: VectorFrame[];
  error?: string;
  maxFrameBytes?: number;
}

const vectors = JSON.parse(readFileSync(new URL('./vectors/frames.json', import.meta.url), 'utf8')) as Vector[];

const DECODER_CODES: string[] = [ErrorCodes.FRAME_TOO_LARGE, ErrorCodes.FRAME_TRUNCATED];

/** What feeding a decoder produced. */
interface Outcome {
  frames: VectorFrame[];
  /** The error code, or null when the input decoded cleanly. */
  error: string | null;
  /** Index of the push that threw, or -1 when `end()` threw (null: nothing threw). */
  thrownBy: number | null;
}

/** A fresh Uint8Array with its own ArrayBuffer (not a view of Node's Buffer pool). */
function own(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * Pushes `chunks` then calls `end()`, checking on the way that `bufferedBytes` is always the
 * number of bytes received of the unfinished frame, and, after an error, that the decoder stays
 * failed: push and end throw the same error again and no frame comes out.
 */
function run(chunks: Uint8Array[], options: FrameDecoderOptions = {}): Outcome {
  const frames: VectorFrame[] = [];
  let frameBytes = 0;
  let failed = false;
  const decoder = new FrameDecoder((type, payload) => {
    expect(failed, 'frame after an error').to.equal(false);
    expect(Buffer.isBuffer(payload)).to.equal(true);
    frames.push({ type, payload: payload.toString('hex') });
    frameBytes += FRAME_HEADER_BYTES + payload.length;
  }, options);
  let fed = 0;
  let error: unknown = null;
  let thrownBy: number | null = null;
  for (let i = 0; i < chunks.length && error === null; i++) {
    const chunk = chunks[i] as Uint8Array;
    try {
      decoder.push(chunk);
      fed += chunk.length;
      expect(decoder.bufferedBytes, 'bufferedBytes after a push').to.equal(fed - frameBytes);
    } catch (err) {
      error = err;
      thrownBy = i;
    }
  }
  if (error === null) {
    try {
      decoder.end();
    } catch (err) {
      error = err;
      thrownBy = -1;
    }
  }
  if (error === null) {
    expect(decoder.bufferedBytes).to.equal(0);
    return { frames, error: null, thrownBy: null };
  }
  expect(error).to.be.instanceOf(NetchanError);
  const code = (error as NetchanError).code;
  expect(DECODER_CODES).to.include(code);
  // sticky: the decoder stays failed, whatever comes next
  failed = true;
  const before = frames.length;
  expect(() => decoder.push(encodeFrame(FrameType.CLOSE, new Uint8Array(0)))).to.throw().that.equals(error);
  expect(() => decoder.push(new Uint8Array(0))).to.throw().that.equals(error);
  expect(() => decoder.end()).to.throw().that.equals(error);
  expect(() => decoder.end()).to.throw().that.equals(error);
  expect(frames.length).to.equal(before);
  return { frames, error: code, thrownBy };
}

/** Cuts `bytes` at the given offsets (any order, duplicates allowed: empty chunks). */
function cut(bytes: Uint8Array, offsets: number[]): Uint8Array[] {
  const points = [...offsets].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let start = 0;
  for (const p of points) {
    chunks.push(bytes.subarray(start, p));
    start = p;
  }
  chunks.push(bytes.subarray(start));
  return chunks;
}

/** A straightforward whole-input parser: what any split of the input must decode to. */
function reference(bytes: Uint8Array, maxFrameBytes: number): { frames: VectorFrame[]; error: string | null } {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames: VectorFrame[] = [];
  let pos = 0;
  for (;;) {
    if (pos === buf.length) return { frames, error: null };
    if (buf.length - pos < FRAME_HEADER_BYTES) return { frames, error: ErrorCodes.FRAME_TRUNCATED };
    const length = buf.readUInt32BE(pos + 1);
    if (length > maxFrameBytes) return { frames, error: ErrorCodes.FRAME_TOO_LARGE };
    if (buf.length - pos - FRAME_HEADER_BYTES < length) return { frames, error: ErrorCodes.FRAME_TRUNCATED };
    frames.push({ type: buf[pos] as number, payload: buf.toString('hex', pos + FRAME_HEADER_BYTES, pos + FRAME_HEADER_BYTES + length) });
    pos += FRAME_HEADER_BYTES + length;
  }
}

/** Offset just past the header that must fail with ERR_FRAME_TOO_LARGE. */
function tooLargeHeaderEnd(v: Vector): number {
  return v.frames.reduce((n, f) => n + FRAME_HEADER_BYTES + f.payload.length / 2, 0) + FRAME_HEADER_BYTES;
}

/** Which push must throw, given the chunks: the one holding the last header byte, or end(). */
function expectedThrower(v: Vector, chunks: Uint8Array[]): number | null {
  if (!v.error) return null;
  if (v.error !== ErrorCodes.FRAME_TOO_LARGE) return -1;
  const at = tooLargeHeaderEnd(v);
  let fed = 0;
  for (let i = 0; i < chunks.length; i++) {
    fed += (chunks[i] as Uint8Array).length;
    if (fed >= at) return i;
  }
  throw new Error(`vector ${v.name}: the too-large header is not complete`);
}

function checkVector(v: Vector, chunks: Uint8Array[], what: string): void {
  const options = v.maxFrameBytes === undefined ? {} : { maxFrameBytes: v.maxFrameBytes };
  const outcome = run(chunks, options);
  expect(outcome.frames, what).to.deep.equal(v.frames);
  expect(outcome.error, what).to.equal(v.error ?? null);
  expect(outcome.thrownBy, `${what}: which call threw`).to.equal(expectedThrower(v, chunks));
}

describe('frames', () => {
  it('uses the frame type numbers of protocol version 1', () => {
    expect(FrameType).to.deep.equal({ VALUE: 1, CREDIT: 2, ACK: 3, CLOSE: 4, ERROR: 5, PING: 6, PONG: 7, RCVD: 8, CLOSE_SEND: 0x0b, RELEASE: 0x0c });
    expect(FRAME_HEADER_BYTES).to.equal(5);
    expect(DEFAULT_MAX_FRAME_BYTES).to.equal(1024 * 1024);
  });

  describe('test vectors (test/vectors/frames.json)', () => {
    it('are well formed and cover both errors', () => {
      expect(vectors.length).to.be.greaterThan(10);
      for (const v of vectors) {
        expect(v.hex, v.name).to.match(/^([0-9a-f]{2})*$/);
        for (const f of v.frames) {
          expect(f.type, v.name).to.be.within(0, 255);
          expect(f.payload, v.name).to.match(/^([0-9a-f]{2})*$/);
        }
        if (v.error) expect(DECODER_CODES, v.name).to.include(v.error);
        // the vector agrees with the whole-input reference parser
        expect(reference(Buffer.from(v.hex, 'hex'), v.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES), v.name).to.deep.equal({
          frames: v.frames,
          error: v.error ?? null,
        });
      }
      const codes = vectors.map((v) => v.error);
      expect(codes).to.include(ErrorCodes.FRAME_TOO_LARGE);
      expect(codes).to.include(ErrorCodes.FRAME_TRUNCATED);
    });

    for (const v of vectors) {
      describe(v.name, () => {
        const bytes = own(Buffer.from(v.hex, 'hex'));

        it('decodes from one push', () => {
          checkVector(v, [bytes], 'one push');
        });

        it('decodes the same when split at every point', () => {
          for (let s = 0; s <= bytes.length; s++) checkVector(v, [bytes.subarray(0, s), bytes.subarray(s)], `split at ${s}`);
        });

        it('decodes the same byte by byte', () => {
          const chunks = Array.from(bytes, (_, i) => bytes.subarray(i, i + 1));
          checkVector(v, chunks, 'byte by byte');
        });

        it('decodes the same from plain Uint8Array chunks of their own', () => {
          for (let s = 0; s <= bytes.length; s++) checkVector(v, [own(bytes.subarray(0, s)), own(bytes.subarray(s))], `own split at ${s}`);
        });

        it('re-encodes to exactly its bytes', () => {
          // for an error vector: the frames before the error are a prefix of its bytes
          const enc = new FrameEncoder(64);
          for (const f of v.frames) enc.frame(f.type, Buffer.from(f.payload, 'hex'));
          const expected = v.error ? v.frames.reduce((n, f) => n + FRAME_HEADER_BYTES + f.payload.length / 2, 0) : bytes.length;
          const taken = enc.take();
          expect(taken === null ? '' : taken.toString('hex')).to.equal(v.hex.slice(0, expected * 2));
          const one = v.frames.map((f) => encodeFrame(f.type, Buffer.from(f.payload, 'hex')).toString('hex')).join('');
          expect(one).to.equal(v.hex.slice(0, expected * 2));
          // count frames written with countFrame are byte-identical
          const counts = new FrameEncoder();
          for (const f of v.frames) {
            if ((f.type === FrameType.CREDIT || f.type === FrameType.ACK) && f.payload.length === 8) {
              counts.countFrame(f.type, Buffer.from(f.payload, 'hex').readUInt32BE(0));
            } else {
              counts.frame(f.type, Buffer.from(f.payload, 'hex'));
            }
          }
          expect(counts.take()?.toString('hex') ?? '').to.equal(v.hex.slice(0, expected * 2));
        });
      });
    }
  });

  describe('FrameDecoder', () => {
    it('fails with ERR_FRAME_TOO_LARGE as soon as the header is complete, before any payload', () => {
      const seen: number[] = [];
      const d = new FrameDecoder((type) => seen.push(type), { maxFrameBytes: 16 });
      const header = own(Buffer.from('0100000011', 'hex'));
      for (let i = 0; i < 4; i++) d.push(header.subarray(i, i + 1));
      expect(d.bufferedBytes).to.equal(4);
      let error: unknown;
      try {
        d.push(header.subarray(4));
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(NetchanError);
      expect((error as NetchanError).code).to.equal(ErrorCodes.FRAME_TOO_LARGE);
      expect(seen).to.deep.equal([]);
      // sticky: a perfectly good frame afterwards is refused with the same error
      expect(() => d.push(encodeFrame(FrameType.VALUE, Buffer.from('c0', 'hex')))).to.throw().that.equals(error);
      expect(() => d.end()).to.throw().that.equals(error);
      expect(seen).to.deep.equal([]);
    });

    it('emits the frames before a too-large header in the same chunk, and none after', () => {
      const seen: string[] = [];
      const d = new FrameDecoder((type, p) => seen.push(`${type}:${p.toString('hex')}`), { maxFrameBytes: 4 });
      const input = Buffer.concat([
        encodeFrame(FrameType.ACK, Buffer.from('00000001', 'hex')),
        encodeFrame(FrameType.VALUE, Buffer.from('0102030405', 'hex')),
        encodeFrame(FrameType.ACK, Buffer.from('00000002', 'hex')),
      ]);
      expect(() => d.push(input)).to.throw(NetchanError).with.property('code', ErrorCodes.FRAME_TOO_LARGE);
      expect(seen).to.deep.equal(['3:00000001']);
    });

    it('is sticky after ERR_FRAME_TRUNCATED', () => {
      let count = 0;
      const d = new FrameDecoder(() => count++);
      d.push(Buffer.from('0100000004aabb', 'hex'));
      expect(d.bufferedBytes).to.equal(7);
      let error: unknown;
      try {
        d.end();
      } catch (err) {
        error = err;
      }
      expect(error).to.be.instanceOf(NetchanError);
      expect((error as NetchanError).code).to.equal(ErrorCodes.FRAME_TRUNCATED);
      expect((error as NetchanError).message).to.contain('7 bytes');
      expect(() => d.push(Buffer.from('ccdd', 'hex'))).to.throw().that.equals(error);
      expect(() => d.end()).to.throw().that.equals(error);
      expect(count).to.equal(0);
    });

    it('may be ended more than once at a frame boundary, and decodes on after that', () => {
      const seen: number[] = [];
      const d = new FrameDecoder((type) => seen.push(type));
      d.end();
      d.push(encodeFrame(FrameType.PING, Buffer.alloc(8)));
      d.end();
      d.end();
      expect(seen).to.deep.equal([FrameType.PING]);
    });

    it('stays failed after the frame handler throws (the rest of that chunk is lost)', () => {
      const boom = new Error('handler failed');
      const seen: number[] = [];
      const d = new FrameDecoder((type) => {
        seen.push(type);
        if (type === FrameType.CREDIT) throw boom;
      });
      const input = Buffer.concat([
        encodeFrame(FrameType.CREDIT, Buffer.from('00000001', 'hex')),
        encodeFrame(FrameType.VALUE, Buffer.from('c3', 'hex')),
      ]);
      expect(() => d.push(input.subarray(0, 12))).to.throw().that.equals(boom);
      // the bytes after the failing frame must not be misread as a new frame
      expect(() => d.push(input.subarray(12))).to.throw().that.equals(boom);
      expect(() => d.end()).to.throw().that.equals(boom);
      expect(seen).to.deep.equal([FrameType.CREDIT]);
    });

    it('accepts a payload of exactly maxFrameBytes and refuses maxFrameBytes + 1', () => {
      for (const max of [0, 1, 4, 16, 1000]) {
        const exact = own(encodeFrame(FrameType.VALUE, Buffer.alloc(max, 0xab)));
        const over = own(encodeFrame(FrameType.VALUE, Buffer.alloc(max + 1, 0xab)));
        for (const s of [0, 3, FRAME_HEADER_BYTES, exact.length]) {
          const ok = run([exact.subarray(0, s), exact.subarray(s)], { maxFrameBytes: max });
          expect(ok.error, `max ${max}`).to.equal(null);
          expect(ok.frames, `max ${max}`).to.deep.equal([{ type: FrameType.VALUE, payload: 'ab'.repeat(max) }]);
          // only the header is needed to refuse the larger one
          const bad = run([over.subarray(0, Math.min(s, FRAME_HEADER_BYTES)), over.subarray(Math.min(s, FRAME_HEADER_BYTES), FRAME_HEADER_BYTES)], { maxFrameBytes: max });
          expect(bad.error, `max ${max} + 1`).to.equal(ErrorCodes.FRAME_TOO_LARGE);
          expect(bad.thrownBy).to.not.equal(-1);
        }
      }
    });

    it('has a default maxFrameBytes of 1 MiB', () => {
      const ok = run([encodeFrame(FrameType.VALUE, Buffer.alloc(DEFAULT_MAX_FRAME_BYTES))]);
      expect(ok.error).to.equal(null);
      expect(ok.frames).to.have.length(1);
      const header = Buffer.alloc(FRAME_HEADER_BYTES);
      header[0] = FrameType.VALUE;
      header.writeUInt32BE(DEFAULT_MAX_FRAME_BYTES + 1, 1);
      expect(run([header]).error).to.equal(ErrorCodes.FRAME_TOO_LARGE);
    });

    it('refuses a maxFrameBytes that is not a non-negative number', () => {
      for (const bad of [Number.NaN, -1, '16' as unknown as number]) {
        expect(() => new FrameDecoder(() => {}, { maxFrameBytes: bad }))
          .to.throw(NetchanError)
          .with.property('code', ErrorCodes.INVALID_ARGUMENT);
      }
      expect(() => new FrameDecoder(() => {}, { maxFrameBytes: Number.POSITIVE_INFINITY })).to.not.throw();
    });

    it('hands out payloads that arrive whole in one chunk as views of that chunk (no copy)', () => {
      const frames = [Buffer.from('de0001a17801', 'hex'), Buffer.from('00000007', 'hex'), Buffer.from('a26869', 'hex')];
      const encoded = Buffer.concat(frames.map((p, i) => encodeFrame(i === 1 ? FrameType.CREDIT : FrameType.VALUE, p)));
      for (const input of [own(encoded), Buffer.from(own(encoded).buffer)]) {
        const payloads: Buffer[] = [];
        new FrameDecoder((_t, p) => payloads.push(p)).push(input);
        expect(payloads.map((p) => p.toString('hex'))).to.deep.equal(frames.map((p) => p.toString('hex')));
        let offset = input.byteOffset;
        for (const p of payloads) {
          offset += FRAME_HEADER_BYTES;
          expect(p.buffer).to.equal(input.buffer);
          expect(p.byteOffset).to.equal(offset);
          offset += p.length;
        }
      }
    });

    it('hands out a payload without copying when only its header was split', () => {
      const encoded = own(encodeFrame(FrameType.VALUE, Buffer.from('de0001a17801', 'hex')));
      for (let s = 1; s < FRAME_HEADER_BYTES; s++) {
        const first = own(encoded.subarray(0, s));
        const second = own(encoded.subarray(s));
        const payloads: Buffer[] = [];
        const d = new FrameDecoder((_t, p) => payloads.push(p));
        d.push(first);
        d.push(second);
        expect(payloads).to.have.length(1);
        const p = payloads[0] as Buffer;
        expect(p.toString('hex')).to.equal('de0001a17801');
        expect(p.buffer).to.equal(second.buffer);
        expect(p.byteOffset).to.equal(FRAME_HEADER_BYTES - s);
      }
    });

    it('assembles a payload split across chunks into a buffer of its own', () => {
      const encoded = own(encodeFrame(FrameType.VALUE, Buffer.from('0102030405060708', 'hex')));
      const chunks = [own(encoded.subarray(0, 8)), own(encoded.subarray(8, 10)), own(encoded.subarray(10))];
      const payloads: Buffer[] = [];
      const d = new FrameDecoder((_t, p) => payloads.push(p));
      for (const c of chunks) d.push(c);
      expect(payloads).to.have.length(1);
      const p = payloads[0] as Buffer;
      expect(p.length).to.equal(8);
      for (const c of chunks) {
        expect(p.buffer).to.not.equal(c.buffer);
        c.fill(0xee);
      }
      expect(p.toString('hex')).to.equal('0102030405060708');
    });

    it('counts in bufferedBytes the bytes of the unfinished frame, back to 0 after whole frames', () => {
      const d = new FrameDecoder(() => {});
      const f = encodeFrame(FrameType.VALUE, Buffer.alloc(10, 1));
      expect(d.bufferedBytes).to.equal(0);
      d.push(f.subarray(0, 3));
      expect(d.bufferedBytes).to.equal(3);
      d.push(f.subarray(3, 5));
      expect(d.bufferedBytes).to.equal(5);
      d.push(f.subarray(5, 9));
      expect(d.bufferedBytes).to.equal(9);
      d.push(f.subarray(9));
      expect(d.bufferedBytes).to.equal(0);
      d.push(Buffer.concat([f, f, f.subarray(0, 2)]));
      expect(d.bufferedBytes).to.equal(2);
      d.push(Buffer.concat([f.subarray(2), f]));
      expect(d.bufferedBytes).to.equal(0);
      d.end();
    });

    it('hands an empty payload out as an empty Buffer', () => {
      const payloads: Buffer[] = [];
      const d = new FrameDecoder((_t, p) => payloads.push(p), { maxFrameBytes: 0 });
      const close = encodeFrame(FrameType.CLOSE, new Uint8Array(0));
      d.push(close);
      for (const b of close) d.push(Uint8Array.of(b));
      expect(payloads).to.have.length(2);
      for (const p of payloads) {
        expect(Buffer.isBuffer(p)).to.equal(true);
        expect(p.length).to.equal(0);
      }
    });
  });

  describe('FrameEncoder', () => {
    it('coalesces many frames into one take(), the concatenation of each frame', () => {
      const enc = new FrameEncoder(64);
      expect(enc.take()).to.equal(null);
      const parts: Buffer[] = [];
      for (let i = 0; i < 500; i++) {
        const payload = Buffer.alloc(i % 37, i & 0xff);
        enc.frame(i % 8, payload);
        parts.push(encodeFrame(i % 8, payload));
        if (i % 50 === 0) {
          enc.countFrame(FrameType.CREDIT, i);
          const p = Buffer.alloc(4);
          p.writeUInt32BE(i);
          parts.push(encodeFrame(FrameType.CREDIT, p));
        }
      }
      const expected = Buffer.concat(parts);
      expect(enc.length).to.equal(expected.length);
      const out = enc.take();
      expect(out).to.not.equal(null);
      expect((out as Buffer).equals(expected)).to.equal(true);
      expect(enc.length).to.equal(0);
      expect(enc.take()).to.equal(null);
      // the encoder is reusable, and what it handed out is not overwritten
      enc.frame(FrameType.PING, Buffer.alloc(8, 0x55));
      expect(enc.take()?.equals(encodeFrame(FrameType.PING, Buffer.alloc(8, 0x55)))).to.equal(true);
      expect((out as Buffer).equals(expected)).to.equal(true);
    });

    it('accepts plain Uint8Array payloads and writes count frames as u32 big-endian', () => {
      const enc = new FrameEncoder();
      enc.frame(FrameType.VALUE, Uint8Array.of(0x81, 0xa1, 0x78, 0x01));
      enc.countFrame(FrameType.ACK, 0x01020304);
      enc.countFrame(FrameType.CREDIT, 0xffffffff);
      expect(enc.take()?.toString('hex')).to.equal('010000000481a17801' + '030000000401020304' + '0200000004ffffffff');
      expect(encodeFrame(FrameType.CLOSE, new Uint8Array(0)).toString('hex')).to.equal('0400000000');
    });

    it('decodes what it encodes, in one take', () => {
      const enc = new FrameEncoder(64);
      const frames = vectors.filter((v) => !v.error).flatMap((v) => v.frames);
      for (const f of frames) enc.frame(f.type, Buffer.from(f.payload, 'hex'));
      const out = enc.take() as Buffer;
      expect(run([out]).frames).to.deep.equal(frames);
    });
  });

  describe('properties', () => {
    const frameArb = fc.record({ type: fc.integer({ min: 0, max: 255 }), payload: fc.uint8Array({ maxLength: 2000 }) });

    it('any frames, encoded and cut into any chunks, decode to the same frames', () => {
      fc.assert(
        fc.property(
          fc.array(frameArb, { maxLength: 20 }),
          fc.array(fc.nat(), { maxLength: 30 }),
          fc.integer({ min: 1, max: 8192 }),
          fc.boolean(),
          (frames, cuts, initial, oneByOne) => {
            const expected = frames.map((f) => ({ type: f.type, payload: hexOf(f.payload) }));
            const enc = new FrameEncoder(initial);
            for (const f of frames) enc.frame(f.type, f.payload);
            const bytes = own(enc.take() ?? new Uint8Array(0));
            const single = Buffer.concat(frames.map((f) => encodeFrame(f.type, f.payload)));
            expect(Buffer.from(bytes).equals(single)).to.equal(true);
            const chunks = oneByOne && bytes.length < 3000
              ? Array.from(bytes, (_, i) => bytes.subarray(i, i + 1))
              : cut(bytes, cuts.map((c) => c % (bytes.length + 1)));
            const outcome = run(chunks, { maxFrameBytes: 2000 });
            expect(outcome.error).to.equal(null);
            expect(outcome.frames).to.deep.equal(expected);
          },
        ),
        { numRuns: 300 },
      );
    });

    it('any bytes: only ERR_FRAME_TOO_LARGE or ERR_FRAME_TRUNCATED, and the same outcome for every split', () => {
      // a mix of valid small frames and random bytes, so that errors come after some frames too
      const pieceArb = fc.oneof(
        fc.record({ type: fc.integer({ min: 0, max: 255 }), payload: fc.uint8Array({ maxLength: 24 }) }).map((f) => own(encodeFrame(f.type, f.payload))),
        fc.uint8Array({ maxLength: 12 }),
      );
      fc.assert(
        fc.property(
          fc.array(pieceArb, { maxLength: 12 }),
          fc.array(fc.nat(), { maxLength: 10 }),
          fc.integer({ min: 0, max: 32 }),
          (pieces, cuts, maxFrameBytes) => {
            const bytes = own(Buffer.concat(pieces));
            const want = reference(bytes, maxFrameBytes);
            const outcomes = [
              run([bytes], { maxFrameBytes }),
              run(cut(bytes, cuts.map((c) => c % (bytes.length + 1))), { maxFrameBytes }),
              run(Array.from(bytes, (_, i) => bytes.subarray(i, i + 1)), { maxFrameBytes }),
            ];
            for (const o of outcomes) {
              expect({ frames: o.frames, error: o.error }).to.deep.equal(want);
              if (o.error === ErrorCodes.FRAME_TRUNCATED) expect(o.thrownBy).to.equal(-1);
              if (o.error === ErrorCodes.FRAME_TOO_LARGE) expect(o.thrownBy).to.not.equal(-1);
            }
          },
        ),
        { numRuns: 500 },
      );
    });

    it('uniformly random bytes never make the decoder throw anything but its two errors', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 512 }), fc.array(fc.nat(), { maxLength: 8 }), fc.integer({ min: 0, max: 64 }), (raw, cuts, maxFrameBytes) => {
          // run() checks instanceof NetchanError, the code, and stickiness
          const o = run(cut(raw, cuts.map((c) => c % (raw.length + 1))), { maxFrameBytes });
          expect(o.error === null || DECODER_CODES.includes(o.error)).to.equal(true);
        }),
        { numRuns: 1000 },
      );
    });
  });
});
