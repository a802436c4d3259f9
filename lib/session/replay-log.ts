/**
 * What a resumable stream wrote and the peer has not confirmed yet (RCVD, docs/PROTOCOL.md §4.5),
 * kept to be written again on the next connection: whole writes, each with its frame count, and
 * the head cut frame by frame as receipts come.
 */
import { FRAME_HEADER_BYTES } from '../wire/frames.js';

interface ReplayEntry {
  bytes: Buffer;
  /** Number of frames in `bytes`. */
  frames: number;
}

export class ReplayLog {
  private entries: ReplayEntry[] = [];
  /** Bytes kept. */
  bytes = 0;

  /** Keeps `bytes`, a write of `frames` whole frames. */
  push(bytes: Buffer, frames: number): void {
    this.entries.push({ bytes, frames });
    this.bytes += bytes.length;
  }

  /** Forgets the first `n` frames; returns how many of `n` were more than it kept (0 when all were). */
  confirm(n: number): number {
    const entries = this.entries;
    while (n > 0 && entries.length > 0) {
      const head = entries[0] as ReplayEntry;
      if (head.frames <= n) {
        n -= head.frames;
        entries.shift();
        this.bytes -= head.bytes.length;
      } else {
        const rest = skipFrames(head.bytes, n);
        this.bytes -= head.bytes.length - rest.length;
        entries[0] = { bytes: rest, frames: head.frames - n };
        n = 0;
      }
    }
    return n;
  }

  /** Frames kept. */
  get frames(): number {
    let n = 0;
    for (const e of this.entries) n += e.frames;
    return n;
  }

  /** Everything kept, in order, as one buffer (empty when nothing is). */
  all(): Buffer {
    return this.entries.length === 1 ? (this.entries[0] as ReplayEntry).bytes : Buffer.concat(this.entries.map((e) => e.bytes));
  }
}

/** `bytes` without its first `n` frames. */
function skipFrames(bytes: Buffer, n: number): Buffer {
  let pos = 0;
  for (let i = 0; i < n; i++) pos += FRAME_HEADER_BYTES + bytes.readUInt32BE(pos + 1);
  return bytes.subarray(pos);
}
