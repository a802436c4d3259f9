/**
 * A pair stream (docs/PROTOCOL.md §5.5): one channel stream for two of the owner's channels, one
 * that the remote only receives from and one that it only sends into, as a `dial` client uses
 * `netchan.out` and `netchan.in`. Each side runs the two ordinary endpoints of a channel stream
 * on it, one per channel, each writing through a {@link PairHalf} of the one FramedStream, and
 * the pair routes the peer's frames to them by type: the frame types of §2.2 already say which
 * direction's values they concern. What the pair adds is the close of each channel on its own
 * (CLOSE for the receive channel, CLOSE_SEND for the send channel, RELEASE when the remote lets
 * go of the receive channel alone), and one end of the stream once both halves are done.
 */
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import { FrameType } from '../wire/frames.js';
import { Headers } from '../wire/headers.js';
import { ChannelExporter, type ExportableChannel } from './exporter.js';
import type { FrameSink, FrameWriter, FramedStream } from './framed-stream.js';
import { peerErrorOf, violation, writeError } from './ordered-endpoint.js';
import { RemoteEndpoint } from './remote-endpoint.js';
import type { StreamContext } from './stream-context.js';

const EMPTY = new Uint8Array(0);

/**
 * What one of the pair's endpoints writes through: the FramedStream, with the close of the send
 * channel spelled CLOSE_SEND, and an `end` that ends the stream only once the other half ended too.
 */
class PairHalf implements FrameWriter {
  ended = false;
  /** The owner's CLOSE of the receive channel, held until the channel is drained for this stream (§5.5). */
  private heldClose: Uint8Array | null = null;

  constructor(
    private readonly pair: PairStream,
    /** The half of the channel the remote receives from; else of the one it sends into. */
    readonly receiving: boolean,
  ) {}

  get writable(): boolean {
    return !this.ended && this.pair.fs.writable;
  }

  get congested(): boolean {
    return this.pair.fs.congested;
  }

  onceDrain(fn: () => void): void {
    this.pair.fs.onceDrain(fn);
  }

  flushSoon(): void {
    this.pair.fs.flushSoon();
  }

  writeValuesAtOnce(yes: boolean): void {
    // only one half writes values: the owner's receive half, the remote's send half
    if (this.receiving === this.pair.owner) this.pair.fs.writeValuesAtOnce(yes);
  }

  frame(type: number, payload: Uint8Array): void {
    if (this.ended) return;
    if (type === FrameType.CLOSE) {
      if (!this.receiving) {
        this.pair.fs.frame(FrameType.CLOSE_SEND, payload);
        // the owner writes nothing for a closed send channel: its ACKs ended with the CLOSE_SEND
        if (this.pair.owner) this.end();
        return;
      }
      if (this.pair.owner) {
        this.heldClose = payload;
        return;
      }
    }
    this.pair.fs.frame(type, payload);
  }

  countFrame(type: number, count: number): void {
    if (!this.ended) this.pair.fs.countFrame(type, count);
  }

  touch(): void {
    if (!this.ended) this.pair.fs.touch();
  }

  flush(): void {
    this.pair.fs.flush();
  }

  end(): void {
    if (this.ended) return;
    // what the endpoint batched (acknowledgements) goes before this half stops writing
    this.pair.endpointOf(this).beforeFlush?.();
    this.ended = true;
    const close = this.heldClose;
    if (close) {
      this.heldClose = null;
      this.pair.fs.frame(FrameType.CLOSE, close);
    }
    this.pair.halfEnded(this);
  }

  destroy(error?: NetchanError): void {
    this.pair.halfDestroyed(this, error);
  }
}

/** The two endpoints of a pair stream, as the pair drives them. */
interface PairEndpoint extends FrameSink {
  onStreamError(error: NetchanError): void;
}

/** Routes a pair stream's frames to its two endpoints, and ends or fails the stream for both. */
abstract class PairStream implements FrameSink {
  /** Written through by the endpoint of the channel the remote receives from. */
  readonly receiveHalf = new PairHalf(this, true);
  /** Written through by the endpoint of the channel the remote sends into. */
  readonly sendHalf = new PairHalf(this, false);
  protected abstract readonly receiver: PairEndpoint;
  protected abstract readonly sender: PairEndpoint;
  private failed = false;
  /**
   * The receive channel is done for the peer's frames: at the owner, the remote let go of it
   * (RELEASE); at the remote, the owner's CLOSE of it arrived.
   */
  private receiveDone = false;
  /** Letting go of both at once: the end of the stream says it, no RELEASE first. */
  protected leaving = false;

  constructor(
    readonly fs: FramedStream,
    protected readonly ctx: StreamContext,
    readonly streamId: string,
    readonly owner: boolean,
  ) {}

  onFrame(type: number, payload: Buffer): void {
    const { receiver, sender } = this;
    switch (type) {
      case FrameType.VALUE:
        if (this.owner) return sender.onFrame(type, payload);
        if (this.receiveDone) return this.fail(violation('VALUE after the CLOSE of the receive channel'));
        return receiver.onFrame(type, payload);
      case FrameType.CREDIT:
      case FrameType.ACK:
        if (!this.owner) return (type === FrameType.ACK ? sender : receiver).onFrame(type, payload);
        if (this.receiveDone) return this.fail(violation(`${type === FrameType.ACK ? 'ACK' : 'CREDIT'} after RELEASE`));
        return receiver.onFrame(type, payload);
      case FrameType.CLOSE:
        if (this.receiveDone) return this.fail(violation(this.owner ? 'CLOSE after RELEASE' : 'a second CLOSE of the receive channel'));
        receiver.onFrame(type, payload);
        if (!this.owner) {
          // the owner wrote it once the channel was drained for this stream: its half is over
          this.receiveDone = true;
          receiver.onStreamEnd();
        }
        return;
      case FrameType.CLOSE_SEND:
        sender.onFrame(FrameType.CLOSE, payload);
        if (!this.owner) sender.onStreamEnd();
        return;
      case FrameType.RELEASE:
        if (!this.owner) return this.fail(violation('RELEASE from the owner'));
        if (payload.length > 0) return this.fail(violation('RELEASE with a payload'));
        if (this.receiveDone) return this.fail(violation('a second RELEASE'));
        this.receiveDone = true;
        // the remote let go of the receive channel: its values in flight go back (§5.3)
        receiver.onStreamEnd();
        return;
      case FrameType.ERROR:
        this.onStreamError(peerErrorOf(this.ctx, payload));
        this.fs.destroy();
        return;
      default:
        // the endpoint refuses it (ERR_PROTOCOL) and fails the stream
        receiver.onFrame(type, payload);
    }
  }

  onStreamEnd(): void {
    this.receiver.onStreamEnd();
    this.sender.onStreamEnd();
  }

  onStreamError(error: NetchanError): void {
    if (this.failed) return;
    this.failed = true;
    this.receiver.onStreamError(error);
    this.sender.onStreamError(error);
  }

  onStreamClose(): void {
    this.receiver.onStreamClose();
    this.sender.onStreamClose();
  }

  beforeFlush(): void {
    this.receiver.beforeFlush?.();
    this.sender.beforeFlush?.();
  }

  onViolation(error: NetchanError): void {
    this.ctx.violated?.(error, this.streamId);
  }

  /** A half is done writing: the stream ends once both are. @internal */
  halfEnded(half: PairHalf): void {
    const other = half.receiving ? this.sendHalf : this.receiveHalf;
    if (other.ended) {
      this.fs.end();
      return;
    }
    // The remote lets go of the receive channel alone. Its acknowledgements went first, so that
    // the owner puts back only the values the program never got.
    if (!this.owner && half.receiving && !this.receiveDone && !this.leaving) this.fs.frame(FrameType.RELEASE, EMPTY);
  }

  /** The endpoint that writes through `half`. @internal */
  endpointOf(half: PairHalf): PairEndpoint {
    return half.receiving ? this.receiver : this.sender;
  }

  /** An endpoint failed the stream: the other one fails with it. @internal */
  halfDestroyed(half: PairHalf, error: NetchanError | undefined): void {
    if (!this.failed) {
      this.failed = true;
      (half.receiving ? this.sender : this.receiver).onStreamError(error ?? netchanError(ErrorCodes.STREAM_RESET, 'pair stream reset'));
    }
    this.fs.destroy(error);
  }

  /** A frame that breaks the pair's rules (§5.5): ERROR to the peer, and the stream fails for both. */
  private fail(error: NetchanError): void {
    this.ctx.violated?.(error, this.streamId);
    writeError(this.fs, this.ctx, error);
    this.onStreamError(error);
    this.fs.destroy(error);
  }
}

/**
 * The owner's side of a pair stream: an exporter of the receive channel and one of the send
 * channel. The session keeps it by stream id, as it keeps exporters.
 */
export class OwnerPair extends PairStream {
  protected readonly receiver: ChannelExporter;
  protected readonly sender: ChannelExporter;

  constructor(
    fs: FramedStream,
    ctx: StreamContext,
    receive: ExportableChannel,
    send: ExportableChannel,
    streamId: string,
    onFinished: (pair: OwnerPair) => void,
  ) {
    super(fs, ctx, streamId, true);
    this.receiver = new ChannelExporter(this.receiveHalf, ctx, receive, streamId, () => onFinished(this));
    this.sender = new ChannelExporter(this.sendHalf, ctx, send, streamId, () => {});
  }

  /** The channel the remote receives from: what a back-reference to this stream names. */
  get channel(): ExportableChannel {
    return this.receiver.channel;
  }

  /** The answer's headers (§5.5): the receive channel's capacity, the send channel's, and the send credits. */
  static answer(receive: ExportableChannel, send: ExportableChannel): Record<string, string> {
    return {
      [Headers.capacity]: String(receive.capacity),
      [Headers.sendCapacity]: String(send.capacity),
      [Headers.credit]: String(ChannelExporter.initialCredits(send)),
    };
  }

  /** {@link answer} for this pair (a resumption answers the opening again, §4.5). */
  get answerHeaders(): Record<string, string> {
    return OwnerPair.answer(this.receiver.channel, this.sender.channel);
  }

  /** This side's session ends gracefully: both halves end. @internal */
  finish(): void {
    this.receiver.finish();
    this.sender.finish();
  }
}

/** How a pair stream opened: the capacities of both channels and the send credits. */
export interface PairOpenInfo {
  capacity: number;
  sendCapacity: number;
  credits: number;
}

/**
 * The remote side of a pair stream: an endpoint on the channel it receives from and one on the
 * channel it sends into, each with a handle of its own for the program.
 */
export class RemotePair<R = unknown, S = unknown> extends PairStream {
  readonly receiver: RemoteEndpoint<R>;
  readonly sender: RemoteEndpoint<S>;

  constructor(fs: FramedStream, ctx: StreamContext, streamId: string, session: object, onFinished: (pair: RemotePair<R, S>) => void) {
    super(fs, ctx, streamId, false);
    this.receiver = new RemoteEndpoint<R>(this.receiveHalf, ctx, streamId, session, () => onFinished(this));
    this.sender = new RemoteEndpoint<S>(this.sendHalf, ctx, streamId, session, () => {});
  }

  /** The owner accepted the stream. */
  open(info: PairOpenInfo): void {
    // the receive endpoint never sends: it needs no credit of its own
    this.receiver.open({ capacity: info.capacity, credits: 1 });
    this.sender.open({ capacity: info.sendCapacity, credits: info.credits });
  }

  /** The stream could not be opened (unknown channel, refused, connection failed). */
  failOpen(error: NetchanError): void {
    this.onStreamError(error);
    this.fs.destroy();
  }

  /** Lets go of both channels gracefully (the session ends). @internal */
  leave(code: string, message: string): void {
    this.leaving = true;
    this.receiver.leave(code, message);
    this.sender.leave(code, message);
  }
}
