/**
 * The protocol's test vectors, run inside the page (bundled by bin/build-browser.ts like the
 * package): the codec (test/vectors/codec.json and codec-refused.json), the frame decoder
 * (frames.json, whole and byte by byte) and the WebSocket mux frames (mux.json), with the code
 * the page runs. Returns one line per vector that failed, and how many ran.
 */
import { Codec } from '../../lib/wire/codec.js';
import { FrameDecoder } from '../../lib/wire/frames.js';
import { decodeMuxFrame, encodeHeaders, encodeMuxFrame } from '../../lib/wire/mux-frames.js';
import { NetchanError } from '../../lib/core/errors.js';
import '../../lib/session/session.js'; // registers the channel and stream classes as references
import { normalize } from '../helpers/normalize.js';
import { fromTagged } from '../helpers/tagged.js';
import codecVectors from '../vectors/codec.json' with { type: 'json' };
import refusedVectors from '../vectors/codec-refused.json' with { type: 'json' };
import frameVectors from '../vectors/frames.json' with { type: 'json' };
import muxVectors from '../vectors/mux.json' with { type: 'json' };

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const bytes = (h: string): Uint8Array => {
  // as docs/PROTOCOL.md writes it: spaces ignored, `91×10000` repeats a byte
  const clean = h.replace(/([0-9a-f]{2})×(\d+)/g, (_, b: string, n: string) => b.repeat(Number(n))).replace(/\s+/g, '');
  return Uint8Array.from({ length: clean.length / 2 }, (_, i) => parseInt(clean.slice(i * 2, i * 2 + 2), 16));
};

const same = (a: unknown, b: unknown): boolean => JSON.stringify(normalize(a)) === JSON.stringify(normalize(b));

function decodeFrames(chunks: Uint8Array[], maxFrameBytes?: number): { frames: { type: number; payload: string }[]; error: string | null } {
  const frames: { type: number; payload: string }[] = [];
  const decoder = new FrameDecoder((type, payload) => frames.push({ type, payload: hex(payload) }), maxFrameBytes === undefined ? {} : { maxFrameBytes });
  try {
    for (const c of chunks) decoder.push(c);
    decoder.end();
    return { frames, error: null };
  } catch (err) {
    return { frames, error: err instanceof NetchanError ? err.code : `not a NetchanError: ${String(err)}` };
  }
}

/** Runs every vector; `failures` names each one that did not hold. */
export function runVectors(): { ran: number; failures: string[] } {
  const failures: string[] = [];
  let ran = 0;
  const check = (name: string, ok: () => boolean): void => {
    ran++;
    try {
      if (!ok()) failures.push(name);
    } catch (err) {
      failures.push(`${name}: threw ${String(err)}`);
    }
  };
  const codec = new Codec();
  for (const v of codecVectors as { name: string; value: unknown; hex: string }[]) {
    const value = fromTagged(v.value);
    check(`codec encode: ${v.name}`, () => hex(codec.encode(value)) === v.hex);
    check(`codec decode: ${v.name}`, () => same(codec.decode(bytes(v.hex)), value));
  }
  for (const v of refusedVectors as { hex: string; why: string; code: string }[]) {
    check(`codec refuses: ${v.why}`, () => {
      try {
        codec.decode(bytes(v.hex));
        return false;
      } catch (err) {
        return err instanceof NetchanError && err.code === v.code;
      }
    });
  }
  for (const v of frameVectors as { name: string; hex: string; frames: { type: number; payload: string }[]; error?: string; maxFrameBytes?: number }[]) {
    const input = bytes(v.hex);
    const expected = JSON.stringify({ frames: v.frames, error: v.error ?? null });
    check(`frames, one push: ${v.name}`, () => JSON.stringify(decodeFrames([input], v.maxFrameBytes)) === expected);
    check(`frames, byte by byte: ${v.name}`, () => JSON.stringify(decodeFrames(Array.from(input, (b) => Uint8Array.of(b)), v.maxFrameBytes)) === expected);
  }
  const mux = muxVectors as { frames: { name: string; hex: string; type: number; stream: number; headers?: Record<string, string>; payload?: string }[]; errors: { name: string; hex: string }[] };
  for (const v of mux.frames) {
    check(`mux: ${v.name}`, () => {
      const payload = v.headers ? encodeHeaders(v.headers) : bytes(v.payload ?? '');
      if (hex(encodeMuxFrame(v.type, v.stream, payload)) !== v.hex) return false;
      const decoded = decodeMuxFrame(Buffer.from(bytes(v.hex)));
      if (decoded.type !== v.type || decoded.stream !== v.stream) return false;
      return v.headers ? JSON.stringify({ ...decoded.headers }) === JSON.stringify(v.headers) : hex(decoded.payload) === v.payload;
    });
  }
  for (const v of mux.errors) {
    check(`mux refuses: ${v.name}`, () => {
      try {
        decodeMuxFrame(Buffer.from(bytes(v.hex)));
        return false;
      } catch (err) {
        return err instanceof NetchanError && err.code === 'ERR_PROTOCOL';
      }
    });
  }
  return { ran, failures };
}
