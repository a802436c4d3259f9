/**
 * The remote side of a channel stream: a channel whose owner is the peer. Receives ask for
 * values with CREDIT, prefetch up to a window while the program keeps receiving, and acknowledge
 * every value handed to the program with ACK, so that values taken but never delivered go back
 * to the owner's channel when the stream goes (docs/PROTOCOL.md §5). Sends are the
 * {@link RemoteSender}'s; this holds the lifecycle both share: open, close either way, release,
 * failure. (Somewhat over 400 lines: each step of that lifecycle settles the receives here, and
 * split further, each step would live in two files.)
 */
import type { OperationOptions, TryReceiveResult } from '../core/channel.js';
import { ErrorCodes, type NetchanError, netchanError } from '../core/errors.js';
import { Deque, WaitList, type WaitNode } from '../core/queue.js';
import { FrameType } from '../wire/frames.js';
import type { FrameWriter } from './framed-stream.js';
import { OrderedEndpoint, closePayload, violation } from './ordered-endpoint.js';
import { RemoteSender, closedError } from './remote-sender.js';
import type { StreamContext } from './stream-context.js';
import { MAX_PREFETCH, receiveWindow } from './windows.js';

/**
 * A `receive`, or a `for await` step, waiting for a value. It holds the program's handle while
 * it waits, so that the handle is not collected, and its stream released, under it.
 */
class PendingReceive implements WaitNode {
  prev: WaitNode | null = null;
  next: WaitNode | null = null;
  list: WaitList<WaitNode> | null = null;
  resolve!: (v: unknown) => void;
  reject!: (e: Error) => void;
  readonly promise = new Promise<unknown>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  /** A forwarder's receive: the value is lent, acknowledged only once its own peer took it. */
  lends = false;

  constructor(
    /** A `for await` step: resolves with the iterator result itself instead of the bare value. */
    private readonly iterating: boolean,
    readonly holder: object | undefined,
  ) {}

  unwatch(): void {
    if (this.signal && this.onAbort) this.signal.removeEventListener('abort', this.onAbort);
  }

  give(value: unknown): void {
    this.resolve(this.iterating ? { value, done: false } : value);
  }

  /** The channel is closed and drained: a receive rejects, an iteration ends (or throws the close error). */
  closed(error: NetchanError, reason: Error | undefined): void {
    if (!this.iterating) this.reject(error);
    else if (reason) this.reject(reason);
    else this.resolve({ value: undefined, done: true });
  }
}

const ownerReleased = (): Error => netchanError(ErrorCodes.RELEASED, 'the owner released the channel');

/** Options of a remote handle opened by name (`session.channel(name, options)`). */
export interface RemoteChannelOptions {
  /**
   * Values the handle asks for ahead of its program's receives, once the program has received:
   * they travel while the program is busy elsewhere and are at hand when it asks. Default: on a
   * buffered channel `min(capacity, 4096)` (at most that), on a capacity-0 channel 0 (at most 1).
   * Values asked for ahead are committed to this handle: other receivers get them only if the
   * handle lets go first. On a capacity-0 channel the owner's sender still waits until this
   * program took the value, so `prefetch: 1` keeps the rendezvous and saves the round trip of a
   * `await ping.send(x); await pong.receive()` exchange, but a value may wait here while
   * another receiver is idle: leave it 0 for a channel several workers share.
   */
  prefetch?: number;
}

/** How a remote channel handle's stream opened. */
export interface RemoteOpenInfo {
  /** The channel's capacity on the owner's side. */
  capacity: number;
  /** Send credits granted at open. */
  credits: number;
}

/**
 * The remote side of a channel stream: what the session keeps (frame sink, flusher, tables).
 * The program holds a {@link RemoteChannel} on it instead, which this never references, so that
 * a handle the program drops can be collected and its stream released. @internal
 */
export class RemoteEndpoint<T = unknown> extends OrderedEndpoint {
  private cap = 0;
  private opened = false;
  private readonly sender: RemoteSender;
  private readonly inbox = new Deque<T>();
  private readonly receivers = new WaitList<PendingReceive>();
  /** Receive demand granted to the owner and not yet used. */
  private demand = 0;
  private demandPending = 0;
  private consumedPending = 0;
  /** Most demand outstanding at once ({@link receiveWindow}). */
  private demandLimit = 0;
  // totals since the stream opened, for the checks of §5.2 as frames arrive
  private creditsWritten = 0;
  private valuesArrived = 0;
  private prefetch = false;
  /**
   * Values lent to a forwarder (this handle served to a third party): handed out, but
   * acknowledged to the owner only once the forwarder's peer took them, or put back.
   */
  private lent = 0;
  /** The `prefetch` option, if given. */
  private prefetchLimit: number | undefined;
  private localClosed = false;
  private remoteClosed = false;
  private ended = false;
  /**
   * The close error, or what makes it: most streams end with the owner letting go and nothing
   * asking why, and an Error's stack trace costs more than the rest of the stream's end.
   */
  private closeCause: Error | undefined | (() => Error);
  private failure: NetchanError | null = null;
  private released = false;
  private finished = false;
  private readonly closeListeners: ((e: Error | undefined) => void)[] = [];

  constructor(
    fs: FrameWriter,
    ctx: StreamContext,
    /** The stream id both sides use for back-references. */
    readonly streamId: string,
    /** The session this handle belongs to (compared when a handle is sent back to its owner). */
    readonly session: object,
    private readonly onFinished: (rc: RemoteEndpoint<T>) => void,
  ) {
    super(fs, ctx);
    this.sender = new RemoteSender(fs, ctx);
    ctx.counters.channels++;
  }

  /** The batched ACK and CREDIT go out with whatever the stream writes (a FrameSink hook). */
  beforeFlush(): void {
    // ACK before CREDIT: the owner reads the values acknowledged before the new demand, so
    // the outstanding demand it counts never exceeds what this side computed (§5.2)
    const fs = this.fs;
    if (this.consumedPending > 0) {
      fs.countFrame(FrameType.ACK, this.consumedPending);
      this.consumedPending = 0;
    }
    if (this.demandPending > 0) {
      fs.countFrame(FrameType.CREDIT, this.demandPending);
      this.creditsWritten += this.demandPending;
      this.demandPending = 0;
    }
  }

  /** The owner accepted the stream: start sending and receiving. */
  open(info: RemoteOpenInfo): void {
    if (this.opened || this.failure) return;
    this.opened = true;
    this.cap = info.capacity;
    this.fs.writeValuesAtOnce(info.capacity === 0);
    this.demandLimit = receiveWindow(info.capacity);
    this.sender.open(info.capacity, info.credits);
    this.topUpDemand();
  }

  /** The stream could not be opened (unknown channel, refused, connection failed). */
  failOpen(error: NetchanError): void {
    this.onStreamError(error);
    this.fs.destroy();
  }

  get capacity(): number {
    return this.cap;
  }

  get length(): number {
    return this.inbox.length;
  }

  get closed(): boolean {
    return this.localClosed || this.remoteClosed || this.failure !== null;
  }

  /** Values this side sent on credit that the owner refused because it closed first. */
  get refused(): number {
    return this.sender.refused;
  }

  send(value: T, options: OperationOptions | undefined, holder: object | undefined): Promise<void> {
    if (this.failure) return Promise.reject(this.wrapFailure(false));
    if (this.closed || this.released) return Promise.reject(closedError(this.closeError, false));
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(netchanError(ErrorCodes.ABORTED, 'send aborted', { cause: signal.reason, mayHaveBeenDelivered: false }));
    return this.sender.send(value, signal, holder);
  }

  trySend(value: T): boolean {
    if (this.failure) throw this.wrapFailure(false);
    if (this.closed || this.released) throw closedError(this.closeError, false);
    return this.sender.trySend(value);
  }

  receive(options: OperationOptions | undefined, holder: object | undefined): Promise<T> {
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(netchanError(ErrorCodes.ABORTED, 'receive aborted', { cause: signal.reason }));
    return this.nextValue(false, signal, holder) as Promise<T>;
  }

  /**
   * The next value for `receive`, or, `iterating`, the next `for await` step: resolved with the
   * iterator result itself (one promise per value, no `then` in between), and the end of the
   * iteration (or the close error thrown) where `receive` rejects with ERR_CHANNEL_CLOSED.
   */
  nextValue(iterating: boolean, signal: AbortSignal | undefined, holder: object | undefined, lends = false): Promise<unknown> {
    if (this.inbox.length > 0) {
      const value = this.inbox.shift();
      if (lends) this.lent++;
      else this.consumed();
      return Promise.resolve(iterating ? { value, done: false } : value);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended || this.released) {
      if (!iterating) return Promise.reject(closedError(this.closeError));
      return this.closeError ? Promise.reject(this.closeError) : Promise.resolve({ value: undefined, done: true });
    }
    const op = new PendingReceive(iterating, holder);
    op.lends = lends;
    this.receivers.push(op);
    if (signal) {
      op.signal = signal;
      op.onAbort = () => {
        if (op.list) {
          this.receivers.remove(op);
          // demand already granted stays: a value that arrives for it waits in the inbox, and
          // goes back to the owner's channel if this handle goes away before it is received
          op.reject(netchanError(ErrorCodes.ABORTED, 'receive aborted', { cause: signal.reason }));
        }
      };
      signal.addEventListener('abort', op.onAbort, { once: true });
    }
    this.prefetch = true;
    this.topUpDemand();
    return op.promise;
  }

  tryReceive(): TryReceiveResult<T> {
    this.prefetch = true;
    if (this.inbox.length > 0) {
      const value = this.inbox.shift();
      this.consumed();
      return { ok: true, value };
    }
    this.topUpDemand();
    return { ok: false, closed: this.ended || this.failure !== null || this.released };
  }

  /**
   * A receive for a forwarder ({@link lent}): the value it gets counts as handed to a program
   * only once {@link confirmLent} says the forwarder's peer took it. @internal
   */
  lend(signal: AbortSignal): Promise<unknown> {
    if (signal.aborted) return Promise.reject(netchanError(ErrorCodes.ABORTED, 'receive aborted', { cause: signal.reason }));
    return this.nextValue(false, signal, undefined, true);
  }

  /** The forwarder's peer took the next `n` values lent: acknowledged to the owner now. @internal */
  confirmLent(n: number): void {
    for (; n > 0 && this.lent > 0; n--) {
      this.lent--;
      this.consumed();
    }
  }

  /**
   * A value lent never reached the forwarder's peer's program: it is this handle's again, first
   * in line (values come back last first), for the next receive. @internal
   */
  returnLent(value: T): void {
    if (this.lent === 0 || this.released || this.failure) return;
    this.lent--;
    const r = this.receivers.shift();
    if (r) return this.handOver(r, value);
    this.inbox.unshift(value);
    if (this.ended) this.endIfDone();
  }

  /** Closes the channel on the owner's side (close propagates), with an optional error. */
  close(error?: Error): void {
    if (this.localClosed || this.failure || this.released) return;
    this.localClosed = true;
    if (!this.remoteClosed) this.closeCause = error;
    this.fs.frame(FrameType.CLOSE, closePayload(this.ctx, error));
    this.sender.rejectQueued(() => closedError(error, false));
  }

  /** See {@link RemoteChannel.release}. */
  release(): void {
    this.leave(ErrorCodes.RELEASED, 'channel handle released');
  }

  /**
   * The program's handle was collected: nothing can be pending (pending operations hold the
   * handle), so this lets go as `release()` does. @internal
   */
  dropped(): void {
    this.leave(ErrorCodes.RELEASED, 'channel handle dropped by the program');
  }

  /**
   * Lets go gracefully: pending operations reject with `code`, acknowledgements of values already
   * handed to the program are written before this side ends (so the owner never gives them to
   * anyone else), and the stream ends. @internal
   */
  leave(code: string, message: string): void {
    if (this.released || this.finished) return;
    this.released = true;
    this.sender.rejectQueued(() => netchanError(code, message, { mayHaveBeenDelivered: false }));
    this.sender.rejectUnacked(() => netchanError(code, `${message} before the owner acknowledged the value`, { mayHaveBeenDelivered: true }));
    if (this.receivers.size > 0) {
      const err = netchanError(code, message);
      for (let r = this.receivers.shift(); r; r = this.receivers.shift()) {
        r.unwatch();
        r.reject(err);
      }
    }
    this.inbox.clear();
    this.fs.end();
  }

  /** Calls `listener` once when the channel is known to be closed. @internal */
  onClose(listener: (error: Error | undefined) => void): () => void {
    if (this.closed) {
      listener(this.closeError);
      return () => {};
    }
    this.closeListeners.push(listener);
    return () => {
      const i = this.closeListeners.indexOf(listener);
      if (i >= 0) this.closeListeners.splice(i, 1);
    };
  }

  // ---- frames from the owner ----

  protected gone(): boolean {
    return this.failure !== null || this.finished || this.released;
  }

  protected admit(type: number, payload: Buffer): void {
    if (type === FrameType.VALUE) {
      if (this.valuesArrived >= this.creditsWritten) throw violation(`VALUE beyond the receive demand granted (${this.creditsWritten} by CREDIT)`);
      this.valuesArrived++;
    } else if (type === FrameType.ACK) {
      this.sender.admitAck(this.readCount(payload));
    }
  }

  protected handleFrame(type: number, payload: Buffer): void {
    switch (type) {
      case FrameType.VALUE: {
        const value = this.ctx.decode(payload) as T;
        this.ctx.counters.valuesIn++;
        if (this.demand > 0) this.demand--;
        const r = this.receivers.shift();
        if (r) {
          this.handOver(r, value);
        } else if (!this.released) {
          this.inbox.push(value);
        }
        if (this.receivers.size > 0) this.topUpDemand();
        return;
      }
      case FrameType.ACK:
        this.sender.acked(this.readCount(payload));
        return;
      case FrameType.CLOSE:
        this.markRemoteClosed(this.closeErrorOf(payload));
        return;
      default:
        this.commonFrame(type, payload);
    }
  }

  onStreamEnd(): void {
    // The owner ended its side: the channel is closed and drained for us, or the owner let go.
    this.ended = true;
    if (!this.remoteClosed) {
      this.markRemoteClosed(this.localClosed ? this.closeError : ownerReleased);
    }
    this.endIfDone();
    // Otherwise this side ends once the program has taken the prefetched values (consumed()),
    // and a forwarder's peer those lent, after their acks: ending now would make the owner put
    // them back, and they would be delivered twice.
  }

  /** Gives `value` to a waiting receive: handed to the program, or lent to a forwarder. */
  private handOver(r: PendingReceive, value: unknown): void {
    r.unwatch();
    // given first: the program's continuation is queued before what consumed() schedules
    r.give(value);
    if (r.lends) this.lent++;
    else this.consumed();
  }

  /** The owner ended its side: once nothing is left to hand out or confirm, receives end and so does this side. */
  private endIfDone(): void {
    if (this.inbox.length > 0 || this.lent > 0) return;
    if (this.receivers.size > 0) {
      const err = closedError(this.closeError);
      for (let r = this.receivers.shift(); r; r = this.receivers.shift()) {
        r.unwatch();
        r.closed(err, this.closeError);
      }
    }
    this.fs.end();
  }

  onStreamError(error: NetchanError): void {
    if (this.failure || this.finished) return;
    this.failure = error;
    this.dropBacklog();
    // values prefetched but not handed to the program are unacknowledged: the owner puts them
    // back in its channel when the stream goes (§5.2), so handing them out here too would
    // deliver them twice
    this.inbox.clear();
    this.sender.rejectQueued(() => this.wrapFailure(false));
    this.sender.rejectUnacked(() => this.wrapFailure(true));
    for (let r = this.receivers.shift(); r; r = this.receivers.shift()) {
      r.unwatch();
      r.reject(error);
    }
    this.notifyClosed();
  }

  onStreamClose(): void {
    if (this.finished) return;
    this.finished = true;
    this.dropBacklog();
    if (!this.ended && !this.failure && !this.released) {
      this.onStreamError(netchanError(ErrorCodes.CONNECTION_LOST, 'channel stream closed'));
    }
    this.ctx.counters.channels--;
    this.closeListeners.length = 0;
    this.onFinished(this);
  }

  // ---- internals ----

  private topUpDemand(): void {
    if (!this.opened || this.ended || this.released || this.failure || !this.fs.writable) return;
    const window = this.prefetch ? this.prefetchWindow() : 0;
    // demand + inbox is all this side asked for and did not acknowledge: the owner's bound.
    // Receives beyond it wait here and are served as the values before them arrive. On a
    // rendezvous channel the one value asked for ahead is the next receive's, if one waits.
    const ahead = this.cap === 0 ? Math.max(0, window - this.receivers.size) : window;
    const want = Math.min(this.receivers.size + ahead, this.demandLimit);
    const need = want - this.inbox.length - this.demand;
    if (need > 0) {
      this.demand += need;
      this.demandPending += need;
      // Credits go in quarters of the window, or at once when the owner knows of half the window
      // or less (a receive waiting on an empty inbox among them). Below that they ride along with
      // this stream's next write: with few values per turn, a CREDIT of its own per value would
      // cost an HTTP/2 DATA frame and a write each (docs/PROTOCOL.md §5.2).
      if (this.demandPending * 4 >= want || (this.demand - this.demandPending) * 2 <= want) this.fs.touch();
    }
  }

  /** Values asked for ahead of the program's receives ({@link RemoteChannelOptions.prefetch}). */
  private prefetchWindow(): number {
    const most = this.cap > 0 ? Math.min(this.cap, MAX_PREFETCH) : 1;
    const limit = this.prefetchLimit ?? (this.cap > 0 ? most : 0);
    return Math.min(limit, most);
  }

  /** See {@link RemoteChannelOptions.prefetch}. @internal */
  setPrefetch(limit: number): void {
    this.prefetchLimit = limit;
  }

  private consumed(): void {
    this.consumedPending++;
    if (this.ended && this.inbox.length === 0 && this.lent === 0) {
      this.endIfDone(); // the end writes the batched acks first
      return;
    }
    if (this.prefetch) this.topUpDemand();
    // On a rendezvous channel the owner's sender waits for this ACK: it goes as soon as the
    // program's continuation has run, with the CREDIT of the receive it makes next (one write,
    // not two), rather than at the end of the turn.
    if (this.cap === 0) this.fs.flushSoon();
    else this.fs.touch();
  }

  private markRemoteClosed(error: Error | undefined | (() => Error)): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    if (!this.localClosed) this.closeCause = error;
    this.sender.ownerClosed(() => this.closeError);
    this.notifyClosed();
  }

  private get closeError(): Error | undefined {
    const cause = this.closeCause;
    return typeof cause === 'function' ? (this.closeCause = cause()) : cause;
  }

  private notifyClosed(): void {
    const listeners = this.closeListeners.splice(0);
    if (listeners.length > 0) {
      const error = this.closeError;
      for (const l of listeners) l(error);
    }
  }

  private wrapFailure(mayHaveBeenDelivered: boolean): NetchanError {
    const f = this.failure as NetchanError;
    return netchanError(f.code, f.message, { cause: f.cause ?? f, mayHaveBeenDelivered });
  }
}
