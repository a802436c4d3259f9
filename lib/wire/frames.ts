/**
 * Frames: `type:u8 | length:u32be | payload`. A pure incremental decoder (bytes in, frames out;
 * any split of the input gives the same frames) with a hard size limit, and an encoder that
 * lets a writer coalesce many frames into one write. See docs/PROTOCOL.md §2.
 */
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';

/** Frame types of protocol version 1 (docs/PROTOCOL.md §2). */
export const FrameType = {
  /** One encoded value. */
  VALUE: 0x01,
  /** u32: receive demand (remote → owner). */
  CREDIT: 0x02,
  /** u32: values accepted (owner → remote) or handed to the program (remote → owner). */
  ACK: 0x03,
  /** Empty, or the close error as an encoded value. */
  CLOSE: 0x04,
  /** An encoded `{code, message}`: a fatal error on this stream. */
  ERROR: 0x05,
  /** 8 opaque bytes: heartbeat on the control stream. */
  PING: 0x06,
  /** Echo of a PING's 8 bytes. */
  PONG: 0x07,
  /** u32: frames received since the last RCVD, on streams of resumable sessions (§4.5). */
  RCVD: 0x08,
  /**
   * Empty, or the close error: on a pair stream (§5.5), the close of the channel the remote sends
   * into (remote → owner: close it; owner → remote: it closed).
   */
  CLOSE_SEND: 0x0b,
  /** Empty: on a pair stream (§5.5), the remote lets go of the channel it receives from (remote → owner). */
  RELEASE: 0x0c,
} as const;

export const FRAME_HEADER_BYTES = 5;
/** Default largest payload a decoder accepts: 1 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

export interface FrameDecoderOptions {
  /** Largest payload accepted, in bytes. Default 1048576. */
  maxFrameBytes?: number;
}

export type FrameHandler = (type: number, payload: Buffer) => void;

const EMPTY = Buffer.alloc(0);

/**
 * Incremental frame decoder. A payload that arrives whole inside one chunk is a view of that
 * chunk (no copy), also when its header came in an earlier chunk; a payload split across chunks
 * is assembled in one buffer of its size.
 *
 * Errors are sticky: after ERR_FRAME_TOO_LARGE (thrown as soon as a header declares too large a
 * payload, before any of it is buffered), ERR_FRAME_TRUNCATED (thrown by `end`), or an exception
 * thrown by the frame handler (the rest of that chunk is then lost), the decoder is failed:
 * `push` and `end` throw that same error again and no further frame is emitted.
 */
export class FrameDecoder {
  private readonly maxFrameBytes: number;
  private readonly header = Buffer.alloc(FRAME_HEADER_BYTES);
  private headerFill = 0;
  private type = 0;
  private partial: Buffer | null = null;
  private partialFill = 0;
  /** Set once the decoder failed; `error` is what push/end throw from then on. */
  private failure: { error: unknown } | null = null;

  constructor(
    private readonly onFrame: FrameHandler,
    options: FrameDecoderOptions = {},
  ) {
    const max = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    // a NaN limit would make every `length > max` false, i.e. silently no limit at all
    if (typeof max !== 'number' || Number.isNaN(max) || max < 0) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, `maxFrameBytes must be a non-negative number, got ${String(max)}`);
    }
    this.maxFrameBytes = max;
  }

  /**
   * Bytes received of a frame not yet complete (its header included): 0 exactly when the
   * input so far ends on a frame boundary.
   */
  get bufferedBytes(): number {
    return this.partial ? FRAME_HEADER_BYTES + this.partialFill : this.headerFill;
  }

  push(chunk: Uint8Array): void {
    if (this.failure) throw this.failure.error;
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let pos = 0;
    const end = buf.length;
    while (pos < end) {
      if (this.partial) {
        const need = this.partial.length - this.partialFill;
        const n = Math.min(need, end - pos);
        buf.copy(this.partial, this.partialFill, pos, pos + n);
        this.partialFill += n;
        pos += n;
        if (this.partialFill === this.partial.length) {
          const payload = this.partial;
          this.partial = null;
          this.partialFill = 0;
          this.emit(this.type, payload);
        }
        continue;
      }
      let type: number;
      let length: number;
      if (this.headerFill === 0 && end - pos >= FRAME_HEADER_BYTES) {
        type = buf[pos] as number;
        length = buf.readUInt32BE(pos + 1);
        pos += FRAME_HEADER_BYTES;
      } else {
        // header split across chunks
        const n = Math.min(FRAME_HEADER_BYTES - this.headerFill, end - pos);
        buf.copy(this.header, this.headerFill, pos, pos + n);
        this.headerFill += n;
        pos += n;
        if (this.headerFill < FRAME_HEADER_BYTES) break; // the chunk is used up
        this.headerFill = 0;
        type = this.header[0] as number;
        length = this.header.readUInt32BE(1);
      }
      this.check(length);
      if (end - pos >= length) {
        const payload = length === 0 ? EMPTY : buf.subarray(pos, pos + length);
        pos += length;
        this.emit(type, payload);
      } else {
        this.begin(type, length);
      }
    }
  }

  /** The input ended: throws ERR_FRAME_TRUNCATED if it ended inside a frame. */
  end(): void {
    if (this.failure) throw this.failure.error;
    if (this.headerFill > 0 || this.partial) {
      const error = netchanError(ErrorCodes.FRAME_TRUNCATED, `stream ended inside a frame (${this.bufferedBytes} bytes held)`);
      this.failure = { error };
      throw error;
    }
  }

  private emit(type: number, payload: Buffer): void {
    try {
      this.onFrame(type, payload);
    } catch (err) {
      // the rest of the current chunk is lost: going on would misread the stream
      this.failure ??= { error: err };
      throw err;
    }
  }

  private begin(type: number, length: number): void {
    this.type = type;
    this.partial = Buffer.allocUnsafe(length);
    this.partialFill = 0;
  }

  private check(length: number): void {
    if (length > this.maxFrameBytes) {
      const error: NetchanError = netchanError(ErrorCodes.FRAME_TOO_LARGE, `frame declares ${length} payload bytes, more than the ${this.maxFrameBytes} allowed`);
      this.failure = { error };
      throw error;
    }
  }
}

/**
 * Collects frames into one growable buffer; `take` hands them out as one Buffer. The buffer is
 * allocated with the first frame and grows by doubling: an idle stream keeps a small one (a
 * server holds three per client session, so this is per-client memory).
 */
export class FrameEncoder {
  private buf: Buffer = EMPTY;
  private pos = 0;
  private readonly initialBytes: number;

  constructor(initialBytes = 4096) {
    this.initialBytes = Math.max(64, initialBytes);
  }

  get length(): number {
    return this.pos;
  }

  frame(type: number, payload: Uint8Array): void {
    const n = payload.length;
    this.reserve(FRAME_HEADER_BYTES + n);
    const buf = this.buf;
    buf[this.pos] = type;
    buf.writeUInt32BE(n, this.pos + 1);
    if (n > 0) buf.set(payload, this.pos + FRAME_HEADER_BYTES);
    this.pos += FRAME_HEADER_BYTES + n;
  }

  countFrame(type: number, count: number): void {
    this.reserve(FRAME_HEADER_BYTES + 4);
    const buf = this.buf;
    buf[this.pos] = type;
    buf.writeUInt32BE(4, this.pos + 1);
    buf.writeUInt32BE(count >>> 0, this.pos + FRAME_HEADER_BYTES);
    this.pos += FRAME_HEADER_BYTES + 4;
  }

  /** All pending bytes as one Buffer of their own (null if none); the encoder is then empty. */
  take(): Buffer | null {
    if (this.pos === 0) return null;
    const out = Buffer.allocUnsafe(this.pos);
    this.buf.copy(out, 0, 0, this.pos);
    this.pos = 0;
    // A buffer of the initial size goes with what it held: most streams of a busy server are
    // idle, and would each keep one. Only a grown one (a busy stream) is kept for the next turn.
    if (this.buf.length <= this.initialBytes) this.buf = EMPTY;
    return out;
  }

  private reserve(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = Math.max(this.initialBytes, this.buf.length * 2);
    while (size < this.pos + n) size *= 2;
    // A grown buffer is kept, so it has memory of its own: a long-lived slice of Node's shared
    // pool would keep a whole 8 KiB chunk of it alive. One of the initial size lives until the
    // next take() only, and may be a slice.
    const next = size <= this.initialBytes ? Buffer.allocUnsafe(size) : Buffer.allocUnsafeSlow(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }
}

/** Encodes one frame. */
export function encodeFrame(type: number, payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out[0] = type;
  out.writeUInt32BE(payload.length, 1);
  out.set(payload, FRAME_HEADER_BYTES);
  return out;
}
