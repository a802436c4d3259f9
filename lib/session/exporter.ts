/**
 * The owner's side of a channel stream: feeds the peer's values into the channel served, serves
 * the peer's receive demand from it, and propagates close both ways. The channel is reached
 * through an {@link OwnerPort} only, whether it is a local Channel or a forwarded remote handle;
 * the one place that tells them apart is where the port is made.
 */
import { Channel } from '../core/channel.js';
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { Deque } from '../core/queue.js';
import { FrameType } from '../wire/frames.js';
import type { FrameWriter } from './framed-stream.js';
import { ForwardedPort } from './forwarded-port.js';
import { LocalPort } from './local-port.js';
import { OrderedEndpoint, closePayload, violation } from './ordered-endpoint.js';
import { NOTHING, type OwnerPort, type PortListener, type PortSource } from './owner-port.js';
import type { RemoteChannel } from './remote-channel.js';
import type { StreamContext } from './stream-context.js';
import { receiveWindow, sendWindow } from './windows.js';

/**
 * What an exporter can serve: a local Channel, a remote handle forwarded to a third party, or a
 * channel kept elsewhere that makes its own ports (a shared channel).
 */
export type ExportableChannel = Channel<unknown> | RemoteChannel<unknown> | PortSource;

function portOn(channel: ExportableChannel, listener: PortListener): OwnerPort {
  if (channel instanceof Channel) return new LocalPort(channel, listener);
  return 'openPort' in channel ? channel.openPort(listener) : new ForwardedPort(channel, listener);
}

/**
 * The owner's side of one channel stream. The session keeps it by stream id; `channel` is what
 * a back-reference from the peer resolves to.
 */
export class ChannelExporter extends OrderedEndpoint implements PortListener {
  /** Send credits granted to the remote at open (`netchan-credit`). */
  readonly sendCredits: number;
  /** Most receive demand the remote may have outstanding ({@link receiveWindow}). */
  private readonly demandLimit: number;
  // totals since the stream opened, for the checks of §5.2 as frames arrive
  private valuesArrived = 0;
  private acksCounted = 0;
  private creditsArrived = 0;
  private acksArrived = 0;
  private valuesSent = 0;
  private waitingDrain = false;
  private demand = 0;
  private ackPending = 0;
  private readonly ackEagerly: number;
  /** Eager ACKs are written mid-turn: big windows, and rendezvous channels. */
  private readonly ackAtOnce: boolean;
  /** Values sent to the remote and not yet acknowledged as handed to its program. */
  private readonly inflight = new Deque<unknown>();
  private readonly port: OwnerPort;
  private closeSent = false;
  private done = false;
  private finished = false;
  private readonly unlistenClose: () => void;

  constructor(
    fs: FrameWriter,
    ctx: StreamContext,
    readonly channel: ExportableChannel,
    readonly streamId: string,
    private readonly onFinished: (ex: ChannelExporter) => void,
  ) {
    super(fs, ctx);
    this.port = portOn(channel, this);
    this.sendCredits = sendWindow(this.port.capacity);
    this.demandLimit = receiveWindow(this.port.capacity);
    this.ackEagerly = Math.max(1, Math.floor(this.sendCredits / 4));
    this.ackAtOnce = this.ackEagerly >= 64 || this.port.capacity === 0;
    fs.writeValuesAtOnce(this.port.capacity === 0);
    ctx.counters.channels++;
    this.unlistenClose = this.port.onClose((error) => this.channelClosed(error));
  }

  /** Send credits granted at open ({@link sendWindow} of the capacity), before the exporter exists. */
  static initialCredits(channel: ExportableChannel): number {
    return sendWindow(channel.capacity);
  }

  protected gone(): boolean {
    return this.done || this.finished;
  }

  protected admit(type: number, payload: Buffer): void {
    switch (type) {
      case FrameType.VALUE:
        if (this.valuesArrived - this.acksCounted >= this.sendCredits) throw violation(`VALUE beyond the ${this.sendCredits} send credits granted`);
        this.valuesArrived++;
        return;
      case FrameType.CREDIT: {
        const n = this.readCount(payload);
        const outstanding = this.creditsArrived - this.acksArrived;
        if (n > this.demandLimit - outstanding) {
          throw violation(`CREDIT of ${n} with ${outstanding} outstanding: more than the receive window of ${this.demandLimit}`);
        }
        this.creditsArrived += n;
        return;
      }
      case FrameType.ACK: {
        const n = this.readCount(payload);
        if (n > this.valuesSent - this.acksArrived) throw violation(`ACK of ${n} with ${this.valuesSent - this.acksArrived} values unacknowledged`);
        this.acksArrived += n;
        return;
      }
    }
  }

  protected handleFrame(type: number, payload: Buffer): void {
    switch (type) {
      case FrameType.VALUE: {
        const value = this.ctx.decode(payload);
        this.ctx.counters.valuesIn++;
        this.deliver(value);
        return;
      }
      case FrameType.CREDIT:
        this.demand += this.readCount(payload);
        this.pump();
        return;
      case FrameType.ACK: {
        const n = this.readCount(payload);
        for (let i = 0; i < n && this.inflight.length > 0; i++) this.inflight.shift();
        this.port.delivered(n);
        return;
      }
      case FrameType.CLOSE:
        this.port.close(this.closeErrorOf(payload));
        return;
      default:
        this.commonFrame(type, payload);
    }
  }

  private ack(): void {
    this.acksCounted++;
    // Acks return the remote's credits. Once a quarter of its window has accrued they are due,
    // so the remote refills while this side works on the rest of what arrived: without this both
    // sides take turns idling, one window per round trip.
    if (++this.ackPending >= this.ackEagerly) {
      this.fs.countFrame(FrameType.ACK, this.ackPending);
      this.ackPending = 0;
      // Written mid-turn for big windows (a capacity-1024 sender refills while this side works
      // through the rest of a large batch) and on a rendezvous channel (the remote's send waits
      // for this ACK alone). For other small windows the end of the turn comes soon enough, and
      // a write of its own per quarter window would double the stream writes of a busy
      // request-reply peer, each costing more than the wait it saves.
      if (this.ackAtOnce) this.fs.flush();
    }
    // Below a quarter they ride along with this stream's next write. The remote cannot be held
    // up by that: while it has a quarter of its window or more unacknowledged here, they go.
  }

  private deliver(value: unknown): void {
    if (this.port.closed) return; // refused; the remote learns it from CLOSE
    if (this.port.give(value)) this.ack();
  }

  /** A value of the remote that waited for room is in the channel now. @internal */
  given(): void {
    this.ack();
  }

  /** The value the pump waited for. @internal */
  taken(value: unknown): void {
    this.sendValue(value);
    this.pump();
  }

  /** The pump waited for a value, and the channel is closed and drained instead. @internal */
  exhausted(): void {
    this.drained();
  }

  /**
   * Serves the remote's demand from the channel until it is met, the channel is empty or the
   * stream is congested. Congested, it waits for the stream to drain (or the turn to end)
   * instead of taking more: a producer that sends as fast as this takes would otherwise keep
   * it going synchronously without end.
   */
  private pump(): void {
    if (this.done || this.port.waiting || this.waitingDrain) return;
    if (this.demand > 0 && this.fs.congested) return this.awaitDrain();
    const port = this.port;
    while (this.demand > 0) {
      const value = port.tryTake();
      if (value === NOTHING) break;
      this.sendValue(value);
      if (this.demand > 0 && this.fs.congested) return this.awaitDrain();
    }
    if (this.demand === 0) return;
    if (port.drained) {
      this.drained();
      return;
    }
    port.awaitValue();
  }

  private awaitDrain(): void {
    if (this.waitingDrain) return;
    this.waitingDrain = true;
    this.fs.onceDrain(() => {
      this.waitingDrain = false;
      this.pump();
    });
  }

  private sendValue(value: unknown): void {
    let bytes: Uint8Array;
    try {
      bytes = this.ctx.encode(value);
    } catch (err) {
      // the value cannot cross the wire: its sender learns so (or it goes back to local
      // receivers), and this stream fails loudly
      const error = err instanceof NetchanError ? err : netchanError(ErrorCodes.ENCODE, String(err));
      this.port.refuse(value, netchanError(error.code, error.message, { cause: error, mayHaveBeenDelivered: false }));
      this.protocolError(error);
      return;
    }
    this.demand--;
    this.valuesSent++;
    this.inflight.push(value);
    this.fs.frame(FrameType.VALUE, bytes);
    this.ctx.counters.valuesOut++;
  }

  private channelClosed(error: Error | undefined): void {
    if (this.done || this.closeSent) return;
    this.closeSent = true;
    if (this.ackPending > 0) {
      this.fs.countFrame(FrameType.ACK, this.ackPending);
      this.ackPending = 0;
    }
    this.fs.frame(FrameType.CLOSE, closePayload(this.ctx, error));
    if (this.port.drained && !this.port.waiting) this.drained();
  }

  private drained(): void {
    if (this.done) return;
    if (!this.closeSent) this.channelClosed(this.port.closeReason);
    this.done = true;
    this.fs.end();
  }

  /** The batched ACK goes out with whatever the stream writes (a FrameSink hook). */
  beforeFlush(): void {
    if (this.ackPending > 0) {
      this.fs.countFrame(FrameType.ACK, this.ackPending);
      this.ackPending = 0;
    }
  }

  onStreamEnd(): void {
    // the remote let go (released, closed and drained, or its session ends)
    this.dropBacklog();
    this.detach();
    if (!this.done) {
      this.done = true;
      this.fs.end();
    }
  }

  onStreamError(_error?: NetchanError): void {
    this.dropBacklog();
    this.detach();
    this.done = true;
  }

  onStreamClose(): void {
    if (this.finished) return;
    this.finished = true;
    this.dropBacklog();
    this.detach();
    this.unlistenClose();
    this.ctx.counters.channels--;
    this.onFinished(this);
  }

  /** This side's session ends gracefully: write what is pending and end the stream. @internal */
  finish(): void {
    if (this.done) return;
    this.done = true;
    this.fs.end();
  }

  /** Stops serving the remote; values it took but never handed to its program go back. */
  private detach(): void {
    this.port.detach();
    if (this.inflight.length > 0) {
      const back = this.inflight.clear();
      for (let i = back.length - 1; i >= 0; i--) this.port.putBack(back[i]);
    }
    this.demand = 0;
  }
}
