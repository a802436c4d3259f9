/**
 * One channel over one stream. The side that holds the channel is the owner
 * ({@link ChannelExporter}); the other side holds a {@link RemoteChannel} handle with the
 * same interface as a local Channel. Which side opened the HTTP/2 stream does not matter here.
 *
 * Credits (docs/PROTOCOL.md §5): the owner grants send credits (the channel's capacity, at least
 * one) and returns one with every ACK; the remote grants receive demand with CREDIT frames and
 * acknowledges every value handed to its program with ACK, so that values taken but never
 * delivered can go back to the channel when the stream goes away.
 */
import { Channel, Waiter, type ChannelLike, type OperationOptions, type TryReceiveResult } from '../core/channel.js';
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { FrameType } from '../wire/frames.js';
import type { FrameSink, FramedStream } from './framed-stream.js';
import { Deque, WaitList, type WaitNode } from '../core/queue.js';
import { PendingReferences, type StreamContext } from './stream-context.js';

const RESOLVED: Promise<void> = Promise.resolve();
const EMPTY = new Uint8Array(0);
/** Most values a remote receiver prefetches, whatever the capacity. */
export const MAX_PREFETCH = 4096;
/** Most receives of one remote handle the owner serves at once, beyond the prefetch window. */
export const MAX_PENDING_RECEIVES = 4096;

/**
 * Send credits an owner grants at open (`netchan-credit`, docs/PROTOCOL.md §5.2): the capacity,
 * at least one, at most {@link MAX_PREFETCH}. A remote never has more values unacknowledged.
 */
export function sendWindow(capacity: number): number {
  return Math.max(1, Math.min(capacity, MAX_PREFETCH));
}

/**
 * The most receive demand a remote may have outstanding on a channel of this capacity: values
 * asked for with CREDIT and not yet acknowledged with ACK (docs/PROTOCOL.md §5.2). Room for the
 * prefetch window and {@link MAX_PENDING_RECEIVES} receives; the owner refuses more with
 * `ERR_PROTOCOL`, so that no remote can make it take a channel's values without end.
 */
export function receiveWindow(capacity: number): number {
  return Math.min(capacity, MAX_PREFETCH) + MAX_PENDING_RECEIVES;
}

/** A peer broke a rule of §5.2: the stream fails with this. */
function violation(message: string): NetchanError {
  return netchanError(ErrorCodes.PROTOCOL, message);
}

function closedError(cause: Error | undefined, mayHaveBeenDelivered?: boolean): NetchanError {
  return netchanError(ErrorCodes.CHANNEL_CLOSED, 'channel is closed', { cause, mayHaveBeenDelivered });
}

function asError(value: unknown): Error | undefined {
  if (value === undefined || value === null) return undefined;
  if (value instanceof Error) return value;
  return netchanError(ErrorCodes.PROTOCOL, 'peer closed the channel with a non-error value', { cause: value });
}

/**
 * Handles frames in order; when a value waits for referenced streams that have not arrived,
 * later frames wait behind it so that order holds.
 */
/** A value that could not be encoded never left: say so on the error. */
function notSent(err: unknown): NetchanError {
  if (err instanceof NetchanError) return netchanError(err.code, err.message, { cause: err.cause, mayHaveBeenDelivered: false });
  return netchanError(ErrorCodes.ENCODE, String(err), { cause: err, mayHaveBeenDelivered: false });
}

/** A CLOSE frame's payload: empty, or the close error as data (its message alone if the error cannot be encoded). */
function closePayload(ctx: StreamContext, error: Error | undefined): Uint8Array {
  if (!error) return EMPTY;
  try {
    return ctx.encode(error);
  } catch {
    return ctx.encode(new Error(error.message));
  }
}

abstract class OrderedEndpoint implements FrameSink {
  private backlog: [number, Buffer][] | null = null;
  /** CLOSE and ERROR frames in the backlog. */
  private backlogEnds = 0;

  constructor(
    protected readonly fs: FramedStream,
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

  /** Tells the peer what went wrong, then drops the stream. */
  protected protocolError(error: NetchanError): void {
    if (this.fs.writable) {
      try {
        this.fs.frame(FrameType.ERROR, this.ctx.encode({ code: error.code, message: error.message }));
        this.fs.flush();
      } catch {
        // the stream is going away anyway
      }
    }
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
    let code: string = ErrorCodes.PROTOCOL;
    let message = 'peer reported an error';
    try {
      const data = this.ctx.decode(payload) as { code?: unknown; message?: unknown };
      if (typeof data?.code === 'string') code = data.code;
      if (typeof data?.message === 'string') message = data.message;
    } catch {
      // keep the generic error
    }
    return netchanError(code, `peer: ${message}`);
  }

  protected readCount(payload: Buffer): number {
    if (payload.length !== 4) throw netchanError(ErrorCodes.PROTOCOL, `count frame with ${payload.length} payload bytes, expected 4`);
    return payload.readUInt32BE(0);
  }
}

/** A send waiting for credit (queued) or, on a capacity-0 channel, for its ACK. */
class PendingSend implements WaitNode {
  prev: WaitNode | null = null;
  next: WaitNode | null = null;
  list: WaitList<WaitNode> | null = null;
  resolve!: () => void;
  reject!: (e: Error) => void;
  readonly promise = new Promise<void>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
  /** Written to the stream: from then on a failure may have delivered it. */
  written = false;
  settled = false;
  private signal: AbortSignal | undefined;
  private onAbort: (() => void) | undefined;

  constructor(
    public value: unknown,
    /** The program's handle: kept alive while the send is pending (see {@link RemoteChannel}). */
    public holder: object | undefined,
  ) {}

  watch(signal: AbortSignal | undefined, aborted: (op: PendingSend) => void): void {
    if (!signal) return;
    this.signal = signal;
    this.onAbort = () => aborted(this);
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  settle(error?: Error): void {
    if (this.settled) return;
    this.settled = true;
    if (this.signal && this.onAbort) this.signal.removeEventListener('abort', this.onAbort);
    this.value = undefined;
    this.holder = undefined;
    if (error) this.reject(error);
    else this.resolve();
  }
}

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

  constructor(
    /** A `for await` step: resolves with the iterator result itself instead of the bare value. */
    private readonly iterating: boolean,
    /** The program's handle: kept alive while the receive is pending (see {@link RemoteChannel}). */
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
  private credits = 0;
  private readonly sendQueue = new WaitList<PendingSend>();
  /** Values written and not yet acknowledged; `null` for a send that already resolved on credit. */
  private readonly unacked = new Deque<PendingSend | null>();
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
  private valuesWritten = 0;
  private acksArrived = 0;
  private prefetch = false;
  private localClosed = false;
  private remoteClosed = false;
  private ended = false;
  private closeError: Error | undefined;
  private failure: NetchanError | null = null;
  private released = false;
  private waitingDrain = false;
  private finished = false;
  private readonly closeListeners: ((e: Error | undefined) => void)[] = [];
  /** Values this side sent on credit that the owner refused because it closed first. */
  refused = 0;

  constructor(
    fs: FramedStream,
    ctx: StreamContext,
    /** The stream id both sides use for back-references. */
    readonly streamId: string,
    /** The session this handle belongs to (compared when a handle is sent back to its owner). */
    readonly session: object,
    private readonly onFinished: (rc: RemoteEndpoint<T>) => void,
  ) {
    super(fs, ctx);
    fs.beforeFlush = () => {
      // ACK before CREDIT: the owner reads the values acknowledged before the new demand, so
      // the outstanding demand it counts never exceeds what this side computed (§5.2)
      if (this.consumedPending > 0) {
        fs.countFrame(FrameType.ACK, this.consumedPending);
        this.consumedPending = 0;
      }
      if (this.demandPending > 0) {
        fs.countFrame(FrameType.CREDIT, this.demandPending);
        this.creditsWritten += this.demandPending;
        this.demandPending = 0;
      }
    };
    ctx.counters.channels++;
  }

  /** The owner accepted the stream: start sending and receiving. */
  open(info: RemoteOpenInfo): void {
    if (this.opened || this.failure) return;
    this.opened = true;
    this.cap = info.capacity;
    this.fs.urgent = info.capacity === 0;
    this.credits = info.credits;
    this.demandLimit = receiveWindow(info.capacity);
    this.pumpSends();
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

  send(value: T, options: OperationOptions | undefined, holder: object | undefined): Promise<void> {
    if (this.failure) return Promise.reject(this.wrapFailure(false));
    if (this.closed || this.released) return Promise.reject(closedError(this.closeError, false));
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(netchanError(ErrorCodes.ABORTED, 'send aborted', { cause: signal.reason, mayHaveBeenDelivered: false }));
    if (this.canWriteNow()) {
      let bytes: Uint8Array;
      try {
        bytes = this.ctx.encode(value);
      } catch (err) {
        return Promise.reject(notSent(err));
      }
      this.credits--;
      this.writeValue(bytes);
      if (this.cap > 0) {
        this.unacked.push(null);
        return RESOLVED;
      }
      const op = new PendingSend(undefined, holder);
      op.written = true;
      this.unacked.push(op);
      op.watch(signal, (o) => this.abortSend(o, signal as AbortSignal));
      return op.promise;
    }
    const op = new PendingSend(value, holder);
    this.sendQueue.push(op);
    op.watch(signal, (o) => this.abortSend(o, signal as AbortSignal));
    // queued behind congestion with credit left: nothing else would wake the queue up
    if (this.opened && this.credits > 0) this.pumpSends();
    return op.promise;
  }

  trySend(value: T): boolean {
    if (this.failure) throw this.wrapFailure(false);
    if (this.closed || this.released) throw closedError(this.closeError, false);
    if (this.cap === 0 || !this.canWriteNow()) return false;
    let bytes: Uint8Array;
    try {
      bytes = this.ctx.encode(value);
    } catch (err) {
      throw notSent(err);
    }
    this.credits--;
    this.writeValue(bytes);
    this.unacked.push(null);
    return true;
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
  nextValue(iterating: boolean, signal: AbortSignal | undefined, holder: object | undefined): Promise<unknown> {
    if (this.inbox.length > 0) {
      const value = this.inbox.shift();
      this.consumed();
      return Promise.resolve(iterating ? { value, done: false } : value);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.ended || this.released) {
      if (!iterating) return Promise.reject(closedError(this.closeError));
      return this.closeError ? Promise.reject(this.closeError) : Promise.resolve({ value: undefined, done: true });
    }
    const op = new PendingReceive(iterating, holder);
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

  /** Closes the channel on the owner's side (close propagates), with an optional error. */
  close(error?: Error): void {
    if (this.localClosed || this.failure || this.released) return;
    this.localClosed = true;
    if (!this.remoteClosed) this.closeError = error;
    this.fs.frame(FrameType.CLOSE, closePayload(this.ctx, error));
    this.rejectQueued(closedError(error, false));
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
    const err = netchanError(code, message);
    this.rejectQueued(netchanError(code, message, { mayHaveBeenDelivered: false }));
    this.rejectUnacked(netchanError(code, `${message} before the owner acknowledged the value`, { mayHaveBeenDelivered: true }));
    for (let r = this.receivers.shift(); r; r = this.receivers.shift()) {
      r.unwatch();
      r.reject(err);
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
      const n = this.readCount(payload);
      if (n > this.valuesWritten - this.acksArrived) throw violation(`ACK of ${n} with ${this.valuesWritten - this.acksArrived} values unacknowledged`);
      this.acksArrived += n;
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
          r.unwatch();
          this.consumed();
          r.give(value);
        } else if (!this.released) {
          this.inbox.push(value);
        }
        if (this.receivers.size > 0) this.topUpDemand();
        return;
      }
      case FrameType.ACK: {
        const n = this.readCount(payload);
        for (let i = 0; i < n && this.unacked.length > 0; i++) {
          const op = this.unacked.shift();
          this.credits++;
          op?.settle();
        }
        this.pumpSends();
        return;
      }
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
      this.markRemoteClosed(this.localClosed ? this.closeError : netchanError(ErrorCodes.RELEASED, 'the owner released the channel'));
    }
    if (this.inbox.length === 0) {
      const err = closedError(this.closeError);
      for (let r = this.receivers.shift(); r; r = this.receivers.shift()) {
        r.unwatch();
        r.closed(err, this.closeError);
      }
      this.fs.end();
    }
    // Otherwise this side ends once the program has taken the prefetched values (consumed()),
    // after their acks: ending now would make the owner put them back, and they would be
    // delivered twice.
  }

  onStreamError(error: NetchanError): void {
    if (this.failure || this.finished) return;
    this.failure = error;
    this.dropBacklog();
    // values prefetched but not handed to the program are unacknowledged: the owner puts them
    // back in its channel when the stream goes (§5.2), so handing them out here too would
    // deliver them twice
    this.inbox.clear();
    this.rejectQueued(this.wrapFailure(false));
    this.rejectUnacked(this.wrapFailure(true));
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

  private canWriteNow(): boolean {
    return this.opened && this.credits > 0 && this.sendQueue.size === 0 && !this.fs.congested && this.fs.writable;
  }

  private writeValue(bytes: Uint8Array): void {
    this.fs.frame(FrameType.VALUE, bytes);
    this.valuesWritten++;
    this.ctx.counters.valuesOut++;
  }

  private pumpSends(): void {
    while (this.opened && this.credits > 0 && this.sendQueue.size > 0 && this.fs.writable) {
      if (this.fs.congested) {
        if (!this.waitingDrain) {
          this.waitingDrain = true;
          this.fs.onceDrain(() => {
            this.waitingDrain = false;
            this.pumpSends();
          });
        }
        return;
      }
      const op = this.sendQueue.shift() as PendingSend;
      let bytes: Uint8Array;
      try {
        bytes = this.ctx.encode(op.value);
      } catch (err) {
        op.settle(notSent(err));
        continue;
      }
      this.credits--;
      this.writeValue(bytes);
      op.written = true;
      if (this.cap > 0) {
        this.unacked.push(null);
        op.settle();
      } else {
        this.unacked.push(op);
      }
    }
  }

  private abortSend(op: PendingSend, signal: AbortSignal): void {
    if (op.settled) return;
    if (op.list) this.sendQueue.remove(op);
    op.settle(
      netchanError(ErrorCodes.ABORTED, op.written ? 'send aborted after the value was written' : 'send aborted', {
        cause: signal.reason,
        mayHaveBeenDelivered: op.written,
      }),
    );
  }

  private topUpDemand(): void {
    if (!this.opened || this.ended || this.released || this.failure || !this.fs.writable) return;
    const window = this.prefetch && this.cap > 0 ? Math.min(this.cap, MAX_PREFETCH) : 0;
    // demand + inbox is all this side asked for and did not acknowledge: the owner's bound.
    // Receives beyond it wait here and are served as the values before them arrive.
    const want = Math.min(this.receivers.size + window, this.demandLimit);
    const need = want - this.inbox.length - this.demand;
    if (need > 0) {
      this.demand += need;
      this.demandPending += need;
      // Credits go in quarters of the window, or at once when the owner knows of half the window
      // or less (a receive waiting on an empty inbox among them). Below that they ride along with
      // this stream's next write: with few values per turn, a CREDIT of its own per value was an
      // HTTP/2 DATA frame and a write each (docs/PROTOCOL.md §5.2).
      if (this.demandPending * 4 >= want || (this.demand - this.demandPending) * 2 <= want) this.fs.touch();
    }
  }

  private consumed(): void {
    this.consumedPending++;
    if (this.ended && this.inbox.length === 0) {
      this.fs.end(); // writes the batched acks first
      return;
    }
    this.fs.touch();
    if (this.prefetch) this.topUpDemand();
  }

  private markRemoteClosed(error: Error | undefined): void {
    if (this.remoteClosed) return;
    this.remoteClosed = true;
    if (!this.localClosed) this.closeError = error;
    this.rejectQueued(closedError(this.closeError, false));
    // every ACK the owner sent before its CLOSE has been processed: what is still unacked was refused
    for (let op = this.unacked.length ? this.unacked.shift() : undefined; op !== undefined; op = this.unacked.length ? this.unacked.shift() : undefined) {
      if (op) op.settle(closedError(this.closeError, false));
      else this.refused++;
    }
    this.notifyClosed();
  }

  private notifyClosed(): void {
    const listeners = this.closeListeners.splice(0);
    for (const l of listeners) l(this.closeError);
  }

  private rejectQueued(error: NetchanError): void {
    for (let op = this.sendQueue.shift(); op; op = this.sendQueue.shift()) op.settle(error);
  }

  private rejectUnacked(error: NetchanError): void {
    while (this.unacked.length > 0) this.unacked.shift()?.settle(error);
  }

  private wrapFailure(mayHaveBeenDelivered: boolean): NetchanError {
    const f = this.failure as NetchanError;
    return netchanError(f.code, f.message, { cause: f.cause ?? f, mayHaveBeenDelivered });
  }
}

/** Releases the stream of every handle the program dropped without releasing or closing it. */
const dropped = new FinalizationRegistry<RemoteEndpoint<unknown>>((endpoint) => endpoint.dropped());

/**
 * A handle on a channel that lives on the other side of a session. Same interface as
 * {@link Channel}: values sent go to the owner's channel, values received come from it.
 *
 * Over the network, `trySend` succeeds only for a buffered channel with send credit left, and a
 * `send` aborted after its value was written rejects with `mayHaveBeenDelivered: true`.
 *
 * Each handle holds one channel stream (and a place in the server's `maxChannelsPerSession`)
 * until it is closed and drained, released, or its session ends. A handle the program no longer
 * references is released when the garbage collector reclaims it (as `release()`: a reply channel
 * a server received in a request and sent its answer on needs nothing more); `release()`, or
 * `using` (`Symbol.dispose`), frees it at once. Pending operations keep their handle alive.
 */
export class RemoteChannel<T = unknown> implements ChannelLike<T>, Disposable, AsyncDisposable {
  /** See {@link Channel}: the mark of a netchan channel across module copies. @internal */
  get [Symbol.for('netchan.channel')](): true {
    return true;
  }

  /** @internal */
  constructor(private readonly endpoint: RemoteEndpoint<T>) {
    dropped.register(this, endpoint as RemoteEndpoint<unknown>);
  }

  /** The stream id both sides use for back-references. @internal */
  get streamId(): string {
    return this.endpoint.streamId;
  }

  /** The session this handle belongs to (compared when a handle is sent back to its owner). @internal */
  get session(): object {
    return this.endpoint.session;
  }

  /** Values this side sent on credit that the owner refused because it closed first. */
  get refused(): number {
    return this.endpoint.refused;
  }

  get capacity(): number {
    return this.endpoint.capacity;
  }

  get length(): number {
    return this.endpoint.length;
  }

  get closed(): boolean {
    return this.endpoint.closed;
  }

  send(value: T, options?: OperationOptions): Promise<void> {
    return this.endpoint.send(value, options, this);
  }

  trySend(value: T): boolean {
    return this.endpoint.trySend(value);
  }

  receive(options?: OperationOptions): Promise<T> {
    return this.endpoint.receive(options, this);
  }

  tryReceive(): TryReceiveResult<T> {
    return this.endpoint.tryReceive();
  }

  /** Closes the channel on the owner's side (close propagates), with an optional error. */
  close(error?: Error): void {
    this.endpoint.close(error);
  }

  /**
   * Lets go of the remote channel without closing it: pending operations reject with
   * `ERR_RELEASED`, values prefetched but not received go back to the owner's channel, and the
   * stream ends (docs/PROTOCOL.md §5.3). Use it for a channel this program no longer needs;
   * dropping the handle does the same, later (when it is garbage-collected). Idempotent.
   */
  release(): void {
    this.endpoint.release();
  }

  /** `using handle = …`: {@link release} at the end of the block. */
  [Symbol.dispose](): void {
    this.endpoint.release();
  }

  /** `await using handle = …`: {@link release} at the end of the block. */
  [Symbol.asyncDispose](): Promise<void> {
    this.endpoint.release();
    return RESOLVED;
  }

  /** Calls `listener` once when the channel is known to be closed. @internal */
  onClose(listener: (error: Error | undefined) => void): () => void {
    return this.endpoint.onClose(listener);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    // the iterator holds the handle: a `for await` over a handle keeps it
    return { next: () => this.endpoint.nextValue(true, undefined, this) as Promise<IteratorResult<T>> };
  }
}

/** What an exporter can serve: a local Channel, or a remote handle proxied to a third party. */
export type ExportableChannel = Channel<unknown> | RemoteChannel<unknown>;

/**
 * The owner's side of a channel stream: feeds the remote's values into the local channel,
 * serves the remote's receive demand from it, and propagates close both ways.
 */
export class ChannelExporter extends OrderedEndpoint {
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
  /** Values sent to the remote and not yet acknowledged as handed to its program. */
  private readonly inflight = new Deque<unknown>();
  /** The remote's values parked as waiting senders in the local channel. */
  private readonly parked = new Deque<Waiter>();
  private receiveWaiter: Waiter | null = null;
  private genericWaiting: AbortController | null = null;
  private closeSent = false;
  private done = false;
  private finished = false;
  private readonly unlistenClose: () => void;
  private genericChain: Promise<void> = RESOLVED;

  /** Completion callbacks the local channel calls synchronously for parked values. */
  private readonly sendCompletion = {
    done: false,
    complete: (): void => {
      this.parked.shift();
      this.ack();
    },
    fail: (): void => {
      // refused: the channel closed first; the remote learns it from our CLOSE
      this.parked.shift();
    },
  };

  private readonly receiveCompletion = {
    done: false,
    complete: (_w: Waiter, value: unknown, ok: boolean): void => {
      this.receiveWaiter = null;
      if (!ok) {
        this.drained();
        return;
      }
      this.sendValue(value);
      this.pump();
    },
    fail: (): void => {
      this.receiveWaiter = null;
    },
  };

  constructor(
    fs: FramedStream,
    ctx: StreamContext,
    readonly channel: ExportableChannel,
    readonly streamId: string,
    private readonly onFinished: (ex: ChannelExporter) => void,
  ) {
    super(fs, ctx);
    this.sendCredits = ChannelExporter.initialCredits(channel);
    this.demandLimit = receiveWindow(channel.capacity);
    this.ackEagerly = Math.max(1, Math.floor(this.sendCredits / 4));
    fs.urgent = channel.capacity === 0;
    fs.beforeFlush = () => {
      if (this.ackPending > 0) {
        fs.countFrame(FrameType.ACK, this.ackPending);
        this.ackPending = 0;
      }
    };
    ctx.counters.channels++;
    this.unlistenClose = channel.onClose((error) => this.channelClosed(error));
  }

  /** Send credits granted at open: the capacity, at least one, at most {@link MAX_PREFETCH}. */
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
        return;
      }
      case FrameType.CLOSE:
        this.channel.close(this.closeErrorOf(payload));
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
      // Written mid-turn only for big windows (a capacity-1024 sender refills while this side
      // works through the rest of a large batch). For small ones the end of the turn comes soon
      // enough, and a write of its own per quarter window doubled the stream writes of the
      // cluster echo (16 in flight per client): its server CPU per message 9.8 -> 4.6-5.2 us.
      if (this.ackEagerly >= 64) this.fs.flush();
    }
    // Below a quarter they ride along with this stream's next write. The remote cannot be held
    // up by that: while it has a quarter of its window or more unacknowledged here, they go.
  }

  private deliver(value: unknown): void {
    const ch = this.channel;
    if (ch.closed) return; // refused; the remote learns it from CLOSE
    if (ch instanceof Channel) {
      if (this.parked.length === 0 && ch.offer(value)) {
        this.ack();
        return;
      }
      const waiter = new Waiter(value, this.sendCompletion, 0, true);
      this.parked.push(waiter);
      ch.park(waiter, true);
      return;
    }
    // a proxied remote handle: keep order by chaining
    const p = ch.send(value);
    this.genericChain = this.genericChain.then(() =>
      p.then(
        () => this.ack(),
        () => undefined,
      ),
    );
  }

  /**
   * Serves the remote's demand from the channel until it is met, the channel is empty or the
   * stream is congested. Congested, it waits for the stream to drain (or the turn to end)
   * instead of taking more: a producer that sends as fast as this takes would otherwise keep
   * it going synchronously without end.
   */
  private pump(): void {
    if (this.done || this.receiveWaiter || this.genericWaiting || this.waitingDrain) return;
    if (this.demand > 0 && this.fs.congested) return this.awaitDrain();
    const ch = this.channel;
    if (ch instanceof Channel) {
      while (this.demand > 0 && ch.canTake()) {
        this.sendValue(ch.take());
        if (this.demand > 0 && this.fs.congested) return this.awaitDrain();
      }
      if (this.demand === 0) return;
      if (ch.closed) {
        this.drained();
        return;
      }
      this.receiveWaiter = new Waiter(undefined, this.receiveCompletion, 0, false);
      ch.park(this.receiveWaiter, false);
      return;
    }
    if (this.demand === 0) return;
    const ac = new AbortController();
    this.genericWaiting = ac;
    ch.receive({ signal: ac.signal }).then(
      (value) => {
        this.genericWaiting = null;
        this.sendValue(value);
        this.pump();
      },
      (err: unknown) => {
        this.genericWaiting = null;
        if (err instanceof NetchanError && err.code === ErrorCodes.CHANNEL_CLOSED) this.drained();
      },
    );
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
      // the value cannot cross the wire: give it back to local receivers and fail this stream loudly
      if (this.channel instanceof Channel) this.channel.returnValue(value);
      this.protocolError(err instanceof NetchanError ? err : netchanError(ErrorCodes.ENCODE, String(err)));
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
    const ch = this.channel;
    if (ch instanceof Channel && !ch.canTake() && !this.receiveWaiter) this.drained();
  }

  private drained(): void {
    if (this.done) return;
    if (!this.closeSent) this.channelClosed(this.channel instanceof Channel ? this.channel.closeReason : undefined);
    this.done = true;
    this.fs.end();
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
    const ch = this.channel;
    if (this.receiveWaiter) {
      this.receiveWaiter.list?.remove(this.receiveWaiter);
      this.receiveWaiter = null;
    }
    this.genericWaiting?.abort();
    this.genericWaiting = null;
    if (ch instanceof Channel) {
      // values the remote sent that no receiver took yet are withdrawn: its sends were not acknowledged
      while (this.parked.length > 0) {
        const w = this.parked.shift();
        w.list?.remove(w);
      }
      const back: unknown[] = [];
      while (this.inflight.length > 0) back.push(this.inflight.shift());
      for (let i = back.length - 1; i >= 0; i--) ch.returnValue(back[i]);
    } else {
      this.inflight.clear();
    }
    this.demand = 0;
  }
}
