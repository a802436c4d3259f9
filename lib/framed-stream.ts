/**
 * A byte stream (an HTTP/2 stream, or any Duplex a transport provides) carrying frames:
 * an incremental decoder on the way in, and on the way out an encoder whose frames are
 * coalesced into one write per event-loop turn for all streams of a session.
 */
import type { Duplex } from 'node:stream';
import { FrameDecoder, FrameEncoder, FrameType } from './frames.js';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from './errors.js';

/** Receives what a {@link FramedStream} reads. */
export interface FrameSink {
  onFrame(type: number, payload: Buffer): void;
  /** The peer ended its side of the stream cleanly. */
  onStreamEnd(): void;
  /** The stream failed (reset, bad frame, connection lost); it is gone. */
  onStreamError(error: NetchanError): void;
  /** The stream is fully closed, both directions: release everything attached to it. */
  onStreamClose(): void;
}

/**
 * Batches the writes of many streams into one flush per event-loop turn (setImmediate), so that
 * a loop of `await send()` produces one write with many frames instead of one write per value.
 */
export class Flusher {
  private dirty: FramedStream[] = [];
  private scheduled = false;
  private readonly run = (): void => {
    this.scheduled = false;
    const list = this.dirty;
    this.dirty = [];
    for (const fs of list) {
      fs.queued = false;
      fs.flush();
    }
  };

  mark(fs: FramedStream): void {
    // called once per frame: a flag, not a Set lookup
    if (fs.queued) return;
    fs.queued = true;
    this.dirty.push(fs);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.run);
    }
  }
}

/** Counters a FramedStream adds to. */
export interface ByteCounters {
  bytesIn: number;
  bytesOut: number;
}

export class FramedStream {
  /** In its Flusher's list for the end of this turn. @internal */
  queued = false;
  private readonly encoder = new FrameEncoder(4096);
  private readonly decoder: FrameDecoder;
  private ended = false;
  private failed = false;
  private closed = false;
  /** Called just before the pending frames are written; lets owners append batched acks. */
  beforeFlush: (() => void) | null = null;

  constructor(
    readonly stream: Duplex,
    private readonly flusher: Flusher,
    private sink: FrameSink,
    maxFrameBytes: number,
    private readonly counters: ByteCounters,
  ) {
    // once the stream failed (a bad frame, a reset), nothing more of it is handed on, not even the
    // rest of the chunk at hand
    this.decoder = new FrameDecoder(
      (type, payload) => {
        if (!this.failed) this.sink.onFrame(type, payload);
      },
      { maxFrameBytes },
    );
    // an HTTP/2 stream forgets its session when destroyed: keep it to tell a lost connection apart
    const session = (stream as Duplex & { session?: H2SessionState }).session;
    stream.on('data', (chunk: Buffer) => {
      if (this.failed) return;
      counters.bytesIn += chunk.length;
      try {
        this.decoder.push(chunk);
      } catch (err) {
        this.fail(fromNodeError(err));
      }
    });
    stream.on('end', () => {
      if (this.failed) return;
      // Node also ends the readable side of an HTTP/2 stream that was reset or cut off with its
      // connection (rstCode set): that is no clean end of the peer's side.
      if ((stream as Duplex & { rstCode?: number }).rstCode) {
        this.fail(cutOff(session));
        return;
      }
      try {
        this.decoder.end();
      } catch (err) {
        this.fail(fromNodeError(err));
        return;
      }
      this.sink.onStreamEnd();
    });
    stream.on('error', (err: unknown) => this.fail(fromNodeError(err)));
    stream.on('close', () => {
      this.closed = true;
      if (!this.failed && !stream.readableEnded) {
        // closed without a clean end of the peer's side: a reset or a lost connection
        this.failed = true;
        this.sink.onStreamError(cutOff(session));
      }
      this.sink.onStreamClose();
    });
  }

  setSink(sink: FrameSink): void {
    this.sink = sink;
  }

  /** True while frames can still be written. */
  get writable(): boolean {
    return !this.ended && !this.closed && !this.failed;
  }

  /** True when the stream's own write buffer is above its high-water mark. */
  get congested(): boolean {
    return this.stream.writableNeedDrain;
  }

  /**
   * Write VALUE frames at once instead of at the end of the turn. For rendezvous channels: each
   * value waits for its peer anyway, so coalescing saves nothing and costs latency. @internal
   */
  urgent = false;

  frame(type: number, payload: Uint8Array): void {
    if (!this.writable) return;
    this.encoder.frame(type, payload);
    if (this.urgent && type === FrameType.VALUE) this.flush();
    else this.flusher.mark(this);
  }

  countFrame(type: number, count: number): void {
    if (!this.writable) return;
    this.encoder.countFrame(type, count);
    this.flusher.mark(this);
  }

  /** Marks the stream as having something to flush (e.g. batched acks added by `beforeFlush`). */
  touch(): void {
    if (this.writable) this.flusher.mark(this);
  }

  flush(): void {
    if (!this.writable) return;
    this.beforeFlush?.();
    const bytes = this.encoder.take();
    if (bytes) {
      this.counters.bytesOut += bytes.length;
      this.stream.write(bytes);
    }
  }

  /** Writes what is pending and ends this side of the stream. */
  end(): void {
    if (!this.writable) return;
    this.flush();
    this.ended = true;
    this.stream.end();
  }

  /** Drops the stream at once (RST_STREAM on HTTP/2). */
  destroy(error?: NetchanError): void {
    if (this.closed) return;
    this.failed = true;
    const h2 = this.stream as Duplex & { close?: (code?: number) => void; rstCode?: number };
    if (typeof h2.close !== 'function') this.stream.destroy();
    // Http2Stream.close() ends the writable side first: an END_STREAM ahead of the RST_STREAM,
    // which the peer reads as a clean end (a release, §5.3). On an error, reset at once
    // (destroy with an error is RST_STREAM INTERNAL_ERROR, §2.3).
    else if (error) this.stream.destroy(error);
    else h2.close(8 /* CANCEL */);
  }

  private fail(error: NetchanError): void {
    if (this.failed) return;
    this.failed = true;
    this.sink.onStreamError(error);
    this.destroy(error);
  }
}

interface H2SessionState {
  closed?: boolean;
  destroyed?: boolean;
}

/**
 * Why a stream went away without a clean end of the peer's side: its HTTP/2 session is closing
 * or gone (the connection was lost), or the stream alone was reset.
 */
function cutOff(session: H2SessionState | undefined): NetchanError {
  if (session && (session.closed || session.destroyed)) {
    return netchanError(ErrorCodes.CONNECTION_LOST, 'connection lost before the stream ended');
  }
  return fromNodeError(Object.assign(new Error('stream closed before it ended'), { code: 'ERR_HTTP2_STREAM_CANCEL' }));
}
