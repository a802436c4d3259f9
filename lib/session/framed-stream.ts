/**
 * A wire stream (lib/transport/contract.ts) carrying frames:
 * an incremental decoder on the way in, and on the way out an encoder whose frames are
 * coalesced into one write per event-loop turn for all streams of a session (lib/session/flusher.ts),
 * and for a resumable stream the frames kept until the peer confirms them (lib/session/replay-log.ts).
 *
 * Just over 400 lines: one class, the per-stream state of reading, writing, congestion and
 * resumption, which all decide together when a stream is writable.
 */
import { FRAME_HEADER_BYTES, FrameDecoder, FrameEncoder, FrameType } from '../wire/frames.js';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import type { WireStream } from '../transport/contract.js';
import type { Flushable, Flusher } from './flusher.js';
import { ReplayLog } from './replay-log.js';

export { Flusher, RECEIPT_DELAY_MS } from './flusher.js';

/** Receives what a {@link FramedStream} reads. */
export interface FrameSink {
  onFrame(type: number, payload: Buffer): void;
  /** The peer ended its side of the stream cleanly. */
  onStreamEnd(): void;
  /** The stream failed (reset, bad frame, connection lost); it is gone. */
  onStreamError(error: NetchanError): void;
  /** The stream is fully closed, both directions: release everything attached to it. */
  onStreamClose(): void;
  /** Called just before the pending frames are written: a sink appends its batched acks here. */
  beforeFlush?(): void;
  /** The stream is failed for a frame of the peer's that breaks the rules (then `onStreamError`). */
  onViolation?(error: NetchanError): void;
}

/**
 * Receipts (RCVD, docs/PROTOCOL.md §4.5) ride along with what a stream writes anyway. On their
 * own they go after RECEIPT_DELAY_MS (lib/session/flusher.ts), or once this many frames or bytes
 * are unconfirmed.
 */
const RECEIPT_EAGER_FRAMES = 64;
const RECEIPT_EAGER_BYTES = 256 * 1024;

/**
 * Bytes of frames a stream takes in one event-loop turn before it counts as congested. Writes
 * only leave at the end of the turn, so the stream's own buffer cannot tell a loop that frames a
 * whole window of values synchronously (a remote's receive demand, a queue of sends) to stop;
 * this does, and the rest goes in the next turns, after timers and I/O had their go.
 */
export const TURN_BYTES = 256 * 1024;

/**
 * Bytes of written frames a resumable stream keeps unconfirmed (no RCVD yet, §4.5) before it
 * counts as congested: the pumps of values stop until the peer confirms. An honest peer confirms
 * within 250 ms, or once 256 KiB are unconfirmed; one that never does would otherwise make this
 * side keep every frame it ever wrote on the stream.
 */
export const REPLAY_SOFT_BYTES = 4 * 1024 * 1024;

/**
 * What a channel endpoint writes through: a {@link FramedStream}, or one half of a pair stream
 * (lib/session/pair-stream.ts), whose two endpoints share one FramedStream.
 */
export interface FrameWriter {
  readonly writable: boolean;
  readonly congested: boolean;
  onceDrain(fn: () => void): void;
  flushSoon(): void;
  writeValuesAtOnce(yes: boolean): void;
  frame(type: number, payload: Uint8Array): void;
  countFrame(type: number, count: number): void;
  touch(): void;
  flush(): void;
  end(): void;
  destroy(error?: NetchanError): void;
}

/** Counters a FramedStream adds to. */
export interface ByteCounters {
  bytesIn: number;
  bytesOut: number;
}

export class FramedStream implements Flushable, FrameWriter {
  /** In its Flusher's list for the end of this turn. @internal */
  queued = false;
  /** Starts small, and keeps no buffer while idle (FrameEncoder.take); a busy stream keeps the one it grew to. */
  private readonly encoder = new FrameEncoder(256);
  private decoder!: FrameDecoder;
  private ended = false;
  private failed = false;
  private closed = false;
  /** The wire stream under the frames (replaced when a resumable stream is resumed). */
  wire!: WireStream;
  /** Cut off and waiting for {@link resume}. */
  suspended = false;
  /** Frames received (all types but RCVD) since the stream opened, across resumptions. */
  framesIn = 0;
  /** Frames written since the stream opened, across resumptions (resumable streams). */
  framesOut = 0;
  private framesInUnconfirmed = 0;
  private bytesInUnconfirmed = 0;
  /** In its Flusher's list of streams that owe a receipt soon. @internal */
  lazyQueued = false;

  /** Frames came in that the peer has not had a receipt for. @internal */
  get owesReceipt(): boolean {
    return this.framesInUnconfirmed > 0;
  }
  private framesPending = 0;
  /** Bytes framed since the last end of a turn ({@link endTurn}). */
  private turnBytes = 0;
  /** What was written and not confirmed yet (resumable streams only). */
  private replay: ReplayLog | null = null;
  /** Whether the stream may be suspended when its connection is lost (resumable streams only). */
  private canSuspend: () => boolean = () => false;
  /** Made at the first wait: an idle stream has none. */
  private drainWaiters: (() => void)[] | null = null;

  constructor(
    wire: WireStream,
    private readonly flusher: Flusher,
    private sink: FrameSink,
    private readonly maxFrameBytes: number,
    private readonly counters: ByteCounters,
  ) {
    this.bind(wire);
  }

  /**
   * Keeps what it writes until the peer confirms receipt (RCVD frames, docs/PROTOCOL.md §4.5), so
   * that the stream can be resumed on a new connection without loss or duplication. When the
   * stream is cut off with its connection, `canSuspend` is asked: `true` keeps it (suspended,
   * frames kept) for {@link resume} on a new stream instead of failing it.
   */
  enableResume(canSuspend: () => boolean): void {
    this.replay ??= new ReplayLog();
    this.canSuspend = canSuspend;
  }

  private bind(wire: WireStream): void {
    this.wire = wire;
    const stream = wire.bytes;
    // once the stream failed (a bad frame, a reset), nothing more of it is handed on, not even the
    // rest of the chunk at hand
    this.decoder = new FrameDecoder(
      (type, payload) => {
        if (this.failed || this.wire !== wire) return;
        if (this.replay) {
          if (type === FrameType.RCVD) return this.confirmed(payload);
          if (this.replay.bytes > 2 * this.replaySoftBytes + this.maxFrameBytes) {
            return this.violation(netchanError(ErrorCodes.PROTOCOL, `peer leaves ${this.replay.bytes} bytes of frames unconfirmed (no RCVD, §4.5)`));
          }
          this.framesIn++;
          this.bytesInUnconfirmed += payload.length;
          if (++this.framesInUnconfirmed === 1) this.flusher.markLazy(this);
          else if (this.framesInUnconfirmed >= RECEIPT_EAGER_FRAMES || this.bytesInUnconfirmed >= RECEIPT_EAGER_BYTES) this.flusher.mark(this);
        }
        this.sink.onFrame(type, payload);
      },
      { maxFrameBytes: this.maxFrameBytes },
    );
    const current = () => this.wire === wire && !this.suspended;
    stream.on('data', (chunk: Buffer) => {
      if (this.failed || !current()) return;
      this.counters.bytesIn += chunk.length;
      try {
        this.decoder.push(chunk);
      } catch (err) {
        this.violation(fromNodeError(err));
      }
    });
    stream.on('end', () => {
      if (this.failed || !current()) return;
      // a transport may end the readable side of a stream that was reset or cut off with its
      // connection: that is no clean end of the peer's side
      if (wire.cutOff) {
        this.lost(wire.endedBy());
        return;
      }
      try {
        this.decoder.end();
      } catch (err) {
        this.violation(fromNodeError(err));
        return;
      }
      this.sink.onStreamEnd();
    });
    stream.on('error', (err: unknown) => {
      // a connection error (ECONNRESET, a GOAWAY) suspends a resumable stream like a silent cut
      if (current()) this.lost(fromNodeError(err));
    });
    stream.on('drain', () => {
      if (current()) this.drained();
    });
    stream.on('close', () => {
      if (!current()) return;
      if (!this.failed && !stream.readableEnded) {
        // closed without a clean end of the peer's side: a reset or a lost connection
        const error = wire.endedBy();
        if (this.trySuspend(error)) return;
        this.failed = true;
        this.sink.onStreamError(error);
      }
      this.closed = true;
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

  /**
   * True when the stream should take no more frames for now: it framed {@link TURN_BYTES} in
   * this turn, or its own write buffer is above its high-water mark. Whoever loops over frames
   * (a pump of values) stops and waits in {@link onceDrain}.
   */
  get congested(): boolean {
    return this.turnBytes >= TURN_BYTES || (this.replay !== null && this.replay.bytes >= this.replaySoftBytes) || (!this.suspended && this.wire.bytes.writableNeedDrain);
  }

  /**
   * Unconfirmed bytes above which a resumable stream is congested: room for a largest value.
   * Beyond twice this and a largest value (only counts, CLOSE and ERROR are still framed past
   * it), a frame from the peer fails the stream with ERR_PROTOCOL.
   */
  private get replaySoftBytes(): number {
    return Math.max(REPLAY_SOFT_BYTES, this.maxFrameBytes + TURN_BYTES);
  }

  /** Calls `fn` once the stream can take more (at once if it can). */
  onceDrain(fn: () => void): void {
    if (!this.congested) return fn();
    (this.drainWaiters ??= []).push(fn);
  }

  /** The end of an event-loop turn (the Flusher): write what is pending, start a new budget. @internal */
  endTurn(): void {
    this.flush();
    this.turnBytes = 0;
    if (this.drainWaiters) this.drained();
  }

  private drained(): void {
    const waiters = this.drainWaiters;
    if (!waiters || this.congested) return;
    this.drainWaiters = null;
    for (const fn of waiters) fn();
  }

  /** Write VALUE frames at once instead of at the end of the turn (see {@link writeValuesAtOnce}). */
  private urgent = false;

  /**
   * Writes VALUE frames at once instead of at the end of the turn, from now on: for rendezvous
   * channels, whose every value waits for its peer anyway, so coalescing saves nothing and costs
   * latency. Set when the channel's capacity is known.
   */
  writeValuesAtOnce(yes: boolean): void {
    this.urgent = yes;
  }

  frame(type: number, payload: Uint8Array): void {
    if (!this.writable) return;
    this.encoder.frame(type, payload);
    this.turnBytes += FRAME_HEADER_BYTES + payload.length;
    this.framesPending++;
    if (!this.urgent || type !== FrameType.VALUE) this.flusher.mark(this);
    else {
      this.flush();
      // over its budget, the stream needs the end of the turn to get it back
      if (this.turnBytes >= TURN_BYTES) this.flusher.mark(this);
    }
  }

  countFrame(type: number, count: number): void {
    if (!this.writable) return;
    this.encoder.countFrame(type, count);
    this.framesPending++;
    this.flusher.mark(this);
  }

  /** Marks the stream as having something to flush (e.g. batched acks its sink adds in `beforeFlush`). */
  touch(): void {
    if (this.writable) this.flusher.mark(this);
  }

  /**
   * Writes what is pending once the microtasks queued so far have run: after the program's
   * continuation of a value just handed to it, so that what it does at once (the next receive's
   * CREDIT) goes in the same write, not at the end of the turn in a second one.
   */
  flushSoon(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(this.flushNow);
  }

  private flushQueued = false;
  private readonly flushNow = (): void => {
    this.flushQueued = false;
    this.flush();
  };

  flush(): void {
    if (!this.writable) return;
    this.sink.beforeFlush?.();
    const frames = this.framesPending;
    this.framesPending = 0;
    if (this.replay) {
      // The receipt confirmation rides along at the end of the same write, outside the frames
      // kept for replay (a view of the written buffer: no copy), instead of a write of its own.
      const replayable = this.encoder.length;
      if (!this.suspended && this.framesInUnconfirmed > 0) {
        this.encoder.countFrame(FrameType.RCVD, this.framesInUnconfirmed);
        this.framesInUnconfirmed = 0;
        this.bytesInUnconfirmed = 0;
      }
      const out = this.encoder.take();
      if (!out) return;
      if (replayable > 0) {
        this.framesOut += frames;
        this.replay.push(replayable === out.length ? out : out.subarray(0, replayable), frames);
      }
      if (this.suspended) return;
      this.counters.bytesOut += out.length;
      this.wire.bytes.write(out);
      return;
    }
    const bytes = this.encoder.take();
    if (bytes) {
      this.counters.bytesOut += bytes.length;
      this.wire.bytes.write(bytes);
    }
  }

  /** The peer received `n` more of our frames: forget them. */
  private confirmed(payload: Buffer): void {
    if (payload.length !== 4) return this.violation(netchanError(ErrorCodes.PROTOCOL, 'RCVD payload must be 4 bytes'));
    if ((this.replay as ReplayLog).confirm(payload.readUInt32BE(0)) > 0) {
      return this.violation(netchanError(ErrorCodes.PROTOCOL, 'RCVD confirms more frames than were sent'));
    }
    // the pumps held back by unconfirmed frames go on
    if (this.drainWaiters && !this.suspended) this.drained();
  }

  /** Frames sent and not yet confirmed by the peer. */
  get unconfirmedFrames(): number {
    return this.replay?.frames ?? 0;
  }

  /**
   * Continues on `stream` (a new HTTP/2 or mux stream of the resumed session) after the peer
   * said it received `peerFramesIn` frames in all: the frames after those are written again, in
   * order, before anything new.
   */
  resume(wire: WireStream, peerFramesIn: number): void {
    const replay = this.replay;
    if (!replay || !this.suspended) throw netchanError(ErrorCodes.PROTOCOL, 'stream is not suspended');
    const unconfirmed = this.unconfirmedFrames;
    const alreadyConfirmed = this.framesOut - unconfirmed;
    const skip = peerFramesIn - alreadyConfirmed;
    if (skip < 0 || skip > unconfirmed) {
      throw netchanError(ErrorCodes.PROTOCOL, `peer says it received ${peerFramesIn} frames; ${alreadyConfirmed} to ${this.framesOut} possible`);
    }
    this.confirmed(u32(skip));
    this.suspended = false;
    this.bind(wire);
    const stream = wire.bytes;
    // everything the peer has not got yet, then the confirmation of what we got
    this.framesInUnconfirmed = 0;
    this.bytesInUnconfirmed = 0;
    const out = replay.all();
    if (out.length > 0) {
      this.counters.bytesOut += out.length;
      stream.write(out);
    }
    if (this.ended) stream.end();
    else this.touch();
    this.drained();
  }

  /**
   * Treats the current stream as cut off now (the peer resumed on a new connection before this
   * side noticed the old one die): suspends without telling the sink. @internal
   */
  suspendNow(): boolean {
    if (!this.replay || this.failed || this.closed) return false;
    if (this.suspended) return true;
    this.suspended = true;
    this.wire.reset();
    return true;
  }

  /** Writes what is pending and ends this side of the stream. */
  end(): void {
    if (!this.writable) return;
    this.flush();
    this.ended = true;
    if (this.suspended) return;
    this.wire.bytes.end();
  }

  /** Drops the stream at once (RST_STREAM on HTTP/2). */
  destroy(error?: NetchanError): void {
    if (this.closed) return;
    this.failed = true;
    if (this.suspended) {
      // nothing to reset: the connection under it is gone
      this.suspended = false;
      this.closed = true;
      this.sink.onStreamClose();
      return;
    }
    // Without an error: CANCEL, which on HTTP/2 ends the writable side first, an END_STREAM
    // ahead of the RST_STREAM, which the peer reads as a clean end (a release, §5.3). On an
    // error, a reset without that END_STREAM (INTERNAL_ERROR, §2.3).
    if (error) this.wire.fail(error);
    else this.wire.reset();
  }

  /**
   * A suspended stream whose session will not be resumed: fails it as the lost connection would
   * have. @internal
   */
  abandon(error: NetchanError): void {
    if (!this.suspended) return;
    this.suspended = false;
    this.failed = true;
    this.sink.onStreamError(error);
    this.closed = true;
    this.sink.onStreamClose();
  }

  /** The stream went away without a clean end: suspend if the session can resume, else fail. */
  private lost(error: NetchanError): void {
    if (this.trySuspend(error)) return;
    this.fail(error);
  }

  private trySuspend(error: NetchanError): boolean {
    if (!this.replay || this.ended || error.code !== ErrorCodes.CONNECTION_LOST || !this.canSuspend()) return false;
    this.suspended = true;
    return true;
  }

  /** Fails the stream for a frame of the peer's that breaks the rules. */
  private violation(error: NetchanError): void {
    if (this.failed) return;
    this.sink.onViolation?.(error);
    this.fail(error);
  }

  private fail(error: NetchanError): void {
    if (this.failed) return;
    this.failed = true;
    this.sink.onStreamError(error);
    this.destroy(error);
  }
}

function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}
