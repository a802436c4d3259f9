/**
 * What both ends of a channel stream share: frames handled in the order they came, although a
 * value may have to wait for the streams it references (a proxy may spread streams over several
 * connections), the credit rules checked as frames arrive, and how a stream fails.
 */
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { FrameType } from '../wire/frames.js';
import type { FrameSink, FrameWriter } from './framed-stream.js';
import { PendingReferences, type StreamContext } from './stream-context.js';

const EMPTY = new Uint8Array(0);

/** A peer broke a rule of §5.2: the stream fails with this. */
export function violation(message: string): NetchanError {
  return netchanError(ErrorCodes.PROTOCOL, message);
}

/** A CLOSE frame's payload: empty, or the close error as data (its message alone if the error cannot be encoded). */
export function closePayload(ctx: StreamContext, error: Error | undefined): Uint8Array {
  if (!error) return EMPTY;
  try {
    return ctx.encode(error);
  } catch {
    return ctx.encode(new Error(error.message));
  }
}

/** Writes ERROR {code, message} for `error` at once, if the stream still takes frames (§2.2). */
export function writeError(fs: FrameWriter, ctx: StreamContext, error: NetchanError): void {
  if (!fs.writable) return;
  try {
    fs.frame(FrameType.ERROR, ctx.encode({ code: error.code, message: error.message }));
    fs.flush();
  } catch {
    // the stream is going away anyway
  }
}

/** The error an ERROR frame's payload describes (a generic one if it cannot be decoded). */
export function peerErrorOf(ctx: StreamContext, payload: Buffer): NetchanError {
  let code: string = ErrorCodes.PROTOCOL;
  let message = 'peer reported an error';
  try {
    const data = ctx.decode(payload) as { code?: unknown; message?: unknown };
    if (typeof data?.code === 'string') code = data.code;
    if (typeof data?.message === 'string') message = data.message;
  } catch {
    // keep the generic error
  }
  return netchanError(code, `peer: ${message}`);
}

function asError(value: unknown): Error | undefined {
  if (value === undefined || value === null) return undefined;
  if (value instanceof Error) return value;
  return netchanError(ErrorCodes.PROTOCOL, 'peer closed the channel with a non-error value', { cause: value });
}

/**
 * Handles a channel stream's frames in order: when a value waits for referenced streams that
 * have not arrived, the frames after it wait behind it.
 */
export abstract class OrderedEndpoint implements FrameSink {
  private backlog: [number, Buffer][] | null = null;
  /** CLOSE and ERROR frames in the backlog. */
  private backlogEnds = 0;

  constructor(
    protected readonly fs: FrameWriter,
    protected readonly ctx: StreamContext,
  ) {}

  onFrame(type: number, payload: Buffer): void {
    // The credit rules are checked as frames arrive, not as they are handled: frames waiting in
    // the backlog count against the windows too, so that it holds no more than they allow.
    try {
      this.admit(type, payload);
    } catch (err) {
      this.protocolError(err as NetchanError);
      return;
    }
    if (this.backlog) {
      // Only values and what ends the stream need to keep their place behind the waiting value.
      // Counts are handled at once, and a CLOSE or ERROR beyond one of each changes nothing:
      // so the backlog holds no more than the values the windows allow, and two frames.
      if (type === FrameType.VALUE) this.backlog.push([type, payload]);
      else if (type === FrameType.CLOSE || type === FrameType.ERROR) {
        if (this.backlogEnds < 2) {
          this.backlogEnds++;
          this.backlog.push([type, payload]);
        }
      } else this.dispatch(type, payload);
      return;
    }
    this.dispatch(type, payload);
  }

  private dispatch(type: number, payload: Buffer): boolean {
    try {
      this.handleFrame(type, payload);
      return true;
    } catch (err) {
      if (err instanceof PendingReferences) {
        (this.backlog ??= []).unshift([type, payload]);
        err.ready.then(
          () => this.resume(),
          (e: unknown) => this.protocolError(e instanceof NetchanError ? e : netchanError(ErrorCodes.UNKNOWN_REFERENCE, String(e))),
        );
        return false;
      }
      this.protocolError(err instanceof NetchanError ? err : netchanError(ErrorCodes.PROTOCOL, String(err), { cause: err }));
      return false;
    }
  }

  /**
   * The stream went: what waits behind a value for its references goes now, not when the wait
   * ends (up to the reference timeout later). Otherwise a peer that resets streams with waiting
   * values would have their backlogs (up to the send credits of values each) held past the
   * stream, with no bound from the session's stream limits.
   */
  protected dropBacklog(): void {
    this.backlog = null;
    this.backlogEnds = 0;
  }

  private resume(): void {
    const backlog = this.backlog;
    this.backlog = null;
    this.backlogEnds = 0;
    // The stream went (reset, ended, failed) while the value waited: what waited goes with it,
    // unacknowledged, as values of a stream gone are withdrawn (§5.3). Delivered now, they would
    // enter the channel after their sender was detached, and stay parked there for good.
    if (!backlog || this.gone()) return;
    for (let i = 0; i < backlog.length; i++) {
      const [type, payload] = backlog[i] as [number, Buffer];
      if (!this.dispatch(type, payload)) {
        if (this.backlog) {
          const rest = backlog.slice(i + 1);
          (this.backlog as [number, Buffer][]).push(...rest);
          for (const [t] of rest) if (t !== FrameType.VALUE) this.backlogEnds++;
        }
        return;
      }
    }
  }

  /** The stream id both sides use. */
  abstract readonly streamId: string;

  /** The framed stream found a frame that breaks the rules (a FrameSink hook): for observers. */
  onViolation(error: NetchanError): void {
    this.ctx.violated?.(error, this.streamId);
  }

  /** Tells the peer what went wrong, then drops the stream. */
  protected protocolError(error: NetchanError): void {
    this.ctx.violated?.(error, this.streamId);
    writeError(this.fs, this.ctx, error);
    this.onStreamError(error);
    this.fs.destroy(error);
  }

  /** True once the endpoint stopped taking the peer's frames (its stream ended, failed or closed). */
  protected abstract gone(): boolean;
  protected abstract handleFrame(type: number, payload: Buffer): void;
  /** Checks a frame against the credit rules (docs/PROTOCOL.md §5.2) as it arrives; throws the violation. */
  protected abstract admit(type: number, payload: Buffer): void;
  abstract onStreamEnd(): void;
  abstract onStreamError(error: NetchanError): void;
  abstract onStreamClose(): void;

  /** A CLOSE frame's error, if it carries one. */
  protected closeErrorOf(payload: Buffer): Error | undefined {
    return payload.length > 0 ? asError(this.ctx.decode(payload)) : undefined;
  }

  /** ERROR ends the stream; any other type not handled by the endpoint is a protocol error. */
  protected commonFrame(type: number, payload: Buffer): void {
    if (type !== FrameType.ERROR) throw netchanError(ErrorCodes.PROTOCOL, `unexpected frame type 0x${type.toString(16)} on a channel stream`);
    this.onStreamError(this.peerError(payload));
    this.fs.destroy();
  }

  /** Decodes an ERROR frame's payload into the error it describes. */
  protected peerError(payload: Buffer): NetchanError {
    return peerErrorOf(this.ctx, payload);
  }

  protected readCount(payload: Buffer): number {
    if (payload.length !== 4) throw netchanError(ErrorCodes.PROTOCOL, `count frame with ${payload.length} payload bytes, expected 4`);
    return payload.readUInt32BE(0);
  }
}
