/**
 * The bytes of the byte-stream bulk benchmark (bench/bytes.ts), the same on both sides: a fixed
 * 256 KiB block of pseudo-random bytes repeated, sent in 256 KiB chunks. The receiver counts what
 * arrives and takes its CRC-32 (zlib's, the cheapest digest Node has: netchan and the raw stream
 * both pay it in their receivers), which must match the sender's.
 */
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';

/** Bytes per chunk written. */
export const CHUNK_BYTES = 256 * 1024;

const block = Buffer.allocUnsafe(CHUNK_BYTES);
// xorshift32: the same bytes in every process, no file
for (let i = 0, x = 0x9e3779b9; i < CHUNK_BYTES; i += 4) {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  block.writeUInt32LE(x >>> 0, i);
}

/** What a receiver saw: the byte count and its CRC-32. */
export interface Received {
  bytes: number;
  crc: number;
}

/** A Readable of `bytes` bytes of the pattern. */
export function bulkSource(bytes: number): Readable {
  let left = bytes;
  return new Readable({
    highWaterMark: CHUNK_BYTES,
    read() {
      while (left > 0) {
        const n = Math.min(left, CHUNK_BYTES);
        left -= n;
        if (!this.push(n === CHUNK_BYTES ? block : block.subarray(0, n))) return;
      }
      this.push(null);
    },
  });
}

/** What a receiver of {@link bulkSource}(bytes) must see. */
export function expected(bytes: number): Received {
  let crc = 0;
  for (let at = 0; at < bytes; at += CHUNK_BYTES) crc = crc32(block.subarray(0, Math.min(CHUNK_BYTES, bytes - at)), crc);
  return { bytes, crc };
}

/** Reads `source` to its end, counting and digesting. */
export async function receiveAll(source: AsyncIterable<Buffer>): Promise<Received> {
  let bytes = 0;
  let crc = 0;
  for await (const chunk of source) {
    bytes += chunk.length;
    crc = crc32(chunk, crc);
  }
  return { bytes, crc };
}

/** Throws unless `got` is `want`. */
export function verify(what: string, got: Received, want: Received): void {
  if (got.bytes !== want.bytes || got.crc !== want.crc) {
    throw new Error(`${what}: ${got.bytes} bytes with CRC-32 ${got.crc.toString(16)} arrived, ${want.bytes} with ${want.crc.toString(16)} were sent`);
  }
}
