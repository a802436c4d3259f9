/**
 * The end proof of byte streams (docs/PROTOCOL.md §6.2). A byte stream's data travels in
 * `BYTES` frames and ends with one `BYTES_END` frame that carries the number of bytes sent, so
 * that a stream a proxy ends early (a clean END_STREAM after part of the data) fails at its
 * reader instead of reading as complete.
 *
 * `ByteFrameDecoder` is pure and incremental, tested with the vectors printed in the protocol
 * document; `proveByteStream` puts the encoder on a stream's writable side and the decoder on
 * its readable side, so the program reads and writes plain bytes.
 */
import type { Duplex } from 'node:stream';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';

/** Frame types of a byte stream (§2.2). */
export const ByteFrameType = {
  BYTES: 0x09,
  BYTES_END: 0x0a,
} as const;

/** The largest `BYTES` payload one header can declare (u32). */
export const MAX_BYTES_PAYLOAD = 0xffffffff;

const HEADER_BYTES = 5;
const END_PAYLOAD_BYTES = 8;

/** The 5-byte header of a `BYTES` frame of `length` payload bytes (1 to {@link MAX_BYTES_PAYLOAD}). */
export function bytesHeader(length: number): Buffer {
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header[0] = ByteFrameType.BYTES;
  header.writeUInt32BE(length, 1);
  return header;
}

/** The `BYTES_END` frame: the stream's total of `BYTES` payload bytes, u64 big-endian. */
export function bytesEnd(total: number): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_BYTES + END_PAYLOAD_BYTES);
  frame[0] = ByteFrameType.BYTES_END;
  frame.writeUInt32BE(END_PAYLOAD_BYTES, 1);
  frame.writeBigUInt64BE(BigInt(total), HEADER_BYTES);
  return frame;
}

/** Appends `BYTES` frames carrying `chunk` (header, payload, …) to `out`. */
export function frameBytes(chunk: Buffer, out: Buffer[]): void {
  for (let at = 0; at < chunk.length; at += MAX_BYTES_PAYLOAD) {
    const piece = chunk.length - at > MAX_BYTES_PAYLOAD ? chunk.subarray(at, at + MAX_BYTES_PAYLOAD) : at === 0 ? chunk : chunk.subarray(at);
    out.push(bytesHeader(piece.length), piece);
  }
}

function protocolError(message: string): NetchanError {
  return netchanError(ErrorCodes.PROTOCOL, `byte stream: ${message}`);
}

function truncated(message: string): NetchanError {
  return netchanError(ErrorCodes.STREAM_TRUNCATED, `byte stream cut short: ${message}`);
}

/**
 * Decodes one direction of a byte stream. `push` hands each piece of payload to `deliver` as
 * soon as it arrives (never waiting for a whole frame, never copying payload bytes) and throws a
 * NetchanError on a violation; `end` throws unless the end proof arrived. The first failure is
 * final: later calls throw it again.
 */
export class ByteFrameDecoder {
  /** Payload bytes delivered so far. */
  received = 0;
  /** The end proof arrived and matched: the stream is complete. */
  complete = false;
  private failure: NetchanError | null = null;
  /** Header bytes (or `BYTES_END` payload bytes) gathered so far. */
  private readonly held = Buffer.alloc(HEADER_BYTES + END_PAYLOAD_BYTES);
  private heldLength = 0;
  /** Payload bytes still to come in the current `BYTES` frame. */
  private remaining = 0;
  /** In a `BYTES_END` frame: its payload is being gathered. */
  private inEnd = false;

  push(chunk: Buffer, deliver: (piece: Buffer) => void): void {
    if (this.failure) throw this.failure;
    try {
      this.decode(chunk, deliver);
    } catch (err) {
      this.failure = err as NetchanError;
      throw err;
    }
  }

  end(): void {
    if (this.failure) throw this.failure;
    if (this.complete) return;
    const where = this.remaining > 0 || this.heldLength > 0 ? 'inside a frame' : 'without its end proof';
    this.failure = truncated(`ended ${where} after ${this.received} bytes`);
    throw this.failure;
  }

  private decode(chunk: Buffer, deliver: (piece: Buffer) => void): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.complete) throw protocolError(`${chunk.length - at} bytes after BYTES_END`);
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - at);
        deliver(n === chunk.length ? chunk : chunk.subarray(at, at + n));
        this.received += n;
        this.remaining -= n;
        at += n;
        continue;
      }
      const want = this.inEnd ? HEADER_BYTES + END_PAYLOAD_BYTES : HEADER_BYTES;
      const n = Math.min(want - this.heldLength, chunk.length - at);
      chunk.copy(this.held, this.heldLength, at, at + n);
      this.heldLength += n;
      at += n;
      if (this.heldLength < want) return;
      if (this.inEnd) {
        this.finish();
        continue;
      }
      const type = this.held[0]!;
      const length = this.held.readUInt32BE(1);
      if (type === ByteFrameType.BYTES) {
        if (length === 0) throw protocolError('empty BYTES frame');
        this.remaining = length;
        this.heldLength = 0;
      } else if (type === ByteFrameType.BYTES_END) {
        if (length !== END_PAYLOAD_BYTES) throw protocolError(`BYTES_END payload of ${length} bytes, not 8`);
        this.inEnd = true;
      } else {
        throw protocolError(`frame type 0x${type.toString(16).padStart(2, '0')} on a byte stream`);
      }
    }
  }

  private finish(): void {
    const total = this.held.readBigUInt64BE(HEADER_BYTES);
    if (total !== BigInt(this.received)) throw truncated(`the end proof counts ${total} bytes, ${this.received} arrived`);
    this.inEnd = false;
    this.heldLength = 0;
    this.complete = true;
  }
}

type WriteCallback = (err?: Error | null) => void;
type WritevChunks = { chunk: Buffer | string; encoding: string }[] & { allBuffers?: boolean };
interface StreamInternals {
  _write(chunk: Buffer | string, encoding: string, callback: WriteCallback): void;
  _writev?: ((chunks: WritevChunks, callback: WriteCallback) => void) | null;
  push(chunk: unknown, encoding?: BufferEncoding): boolean;
  end(...args: unknown[]): unknown;
}

/**
 * Frames what the program writes to `wire` and unframes what it reads (§6.2): each write goes
 * out as `BYTES`, the end of the writable side as `BYTES_END` with the count before END_STREAM;
 * the readable side ends only once the end proof arrived and matched, and is destroyed with
 * `ERR_STREAM_TRUNCATED` (or `ERR_PROTOCOL`) otherwise. Works on any Duplex that writes through
 * `_write`/`_writev` and reads through `push` (HTTP/2 and WebSocket mux streams).
 */
/** Byte streams failed on purpose (a refused stream's answer): what else arrives is not decoded. */
const refused = new WeakMap<Duplex, Error>();

/**
 * Fails `wire` with `error` (a refusal of the stream, whose text body is no byte stream): its
 * body is dropped undecoded, so the reader sees `error`, not a framing error about the text.
 */
export function refuseByteStream(wire: Duplex, error: Error): void {
  refused.set(wire, error);
  wire.destroy(error);
}

export function proveByteStream(wire: Duplex): void {
  const stream = wire as unknown as StreamInternals;
  const write = stream._write;
  const writev = typeof stream._writev === 'function' ? stream._writev : null;
  let sent = 0;
  // The end proof is the last write, queued by end() behind the program's writes: an HTTP/2
  // stream sends END_STREAM with its last write once the writable side is ending, before
  // `_final` would run.
  const endMark = Buffer.alloc(0);
  const frame = (chunk: Buffer | string, encoding: string, frames: Buffer[]): void => {
    if (chunk === endMark) return void frames.push(bytesEnd(sent));
    // HTTP/2 streams do not decode strings: a chunk may still be one
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, encoding as BufferEncoding) : chunk;
    sent += bytes.length;
    frameBytes(bytes, frames);
  };
  const out = (frames: Buffer[], self: unknown, callback: WriteCallback): void => {
    if (frames.length === 0) return callback();
    if (writev) {
      const chunks = frames.map((chunk) => ({ chunk, encoding: 'buffer' })) as WritevChunks;
      chunks.allBuffers = true;
      writev.call(self, chunks, callback);
    } else {
      write.call(self, frames.length === 1 ? frames[0]! : Buffer.concat(frames), 'buffer', callback);
    }
  };
  stream._write = function (chunk, encoding, callback) {
    const frames: Buffer[] = [];
    frame(chunk, encoding, frames);
    out(frames, this, callback);
  };
  if (writev) {
    stream._writev = function (chunks, callback) {
      const frames: Buffer[] = [];
      for (const { chunk, encoding } of chunks) frame(chunk, encoding, frames);
      out(frames, this, callback);
    };
  }
  const end = stream.end;
  stream.end = function (...args: unknown[]) {
    if (!wire.writableEnded && !wire.destroyed) {
      const [chunk, encoding] = args;
      if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') {
        wire.write(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
      }
      wire.write(endMark);
      const callback = args.find((a) => typeof a === 'function');
      return callback ? end.call(this, callback) : end.call(this);
    }
    return end.apply(this, args);
  };

  const decoder = new ByteFrameDecoder();
  const push = stream.push;
  let pushed = true;
  const deliver = (piece: Buffer): void => {
    pushed = push.call(wire, piece);
  };
  stream.push = function (chunk) {
    if (refused.has(wire)) return false;
    try {
      if (chunk === null) {
        decoder.end();
        return push.call(this, null);
      }
      pushed = wire.readableLength < wire.readableHighWaterMark;
      decoder.push(chunk as Buffer, deliver);
      return pushed;
    } catch (err) {
      // Node pushes the end from inside its own stream-close handling, which reads the stream's
      // session after the push: destroying the stream there (it drops the session) throws in Node.
      process.nextTick(() => wire.destroy(err as Error));
      return false;
    }
  };
  // A server's 'stream' event comes a tick after the HEADERS: DATA (and END_STREAM) in the same
  // read were pushed before this stream was handed over. Decode them now and put them back.
  const endedEarly = (wire as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended === true;
  const early = wire.readableLength > 0 ? (wire.read() as Buffer | null) : null;
  if (!early && !endedEarly) return;
  try {
    const pieces: Buffer[] = [];
    if (early) decoder.push(early, (piece) => pieces.push(piece));
    if (endedEarly) decoder.end();
    if (pieces.length > 0) wire.unshift(pieces.length === 1 ? pieces[0] : Buffer.concat(pieces));
  } catch (err) {
    wire.destroy(err as Error);
  }
}
