/**
 * The sending half of a remote channel: values go out on the send credits the owner granted
 * (docs/PROTOCOL.md §5.2), each ACK returns one, and sends beyond the credits or behind a
 * congested stream wait here in order. On a capacity-0 channel a send resolves only at its ACK,
 * as a local rendezvous resolves only once a receiver took the value.
 *
 * Its endpoint ({@link RemoteEndpoint}) checks whether a send may start at all (closed, failed,
 * released) and tells it when the owner closes or the stream goes.
 */
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { Deque, WaitList, type WaitNode } from '../core/queue.js';
import { FrameType } from '../wire/frames.js';
import type { FrameWriter } from './framed-stream.js';
import { violation } from './ordered-endpoint.js';
import type { StreamContext } from './stream-context.js';

const RESOLVED: Promise<void> = Promise.resolve();

export function closedError(cause: Error | undefined, mayHaveBeenDelivered?: boolean): NetchanError {
  return netchanError(ErrorCodes.CHANNEL_CLOSED, 'channel is closed', { cause, mayHaveBeenDelivered });
}

/** A value that could not be encoded never left: say so on the error. */
export function notSent(err: unknown): NetchanError {
  if (err instanceof NetchanError) return netchanError(err.code, err.message, { cause: err.cause, mayHaveBeenDelivered: false });
  return netchanError(ErrorCodes.ENCODE, String(err), { cause: err, mayHaveBeenDelivered: false });
}

/**
 * A send waiting for credit (queued) or, on a capacity-0 channel, for its ACK. It holds the
 * program's handle while it waits, so that the handle is not collected, and its stream
 * released, under a pending send.
 */
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
  signal: AbortSignal | undefined;
  private onAbort: (() => void) | undefined;

  constructor(
    public value: unknown,
    public holder: object | undefined,
  ) {}

  watch(signal: AbortSignal, sender: RemoteSender): void {
    this.signal = signal;
    this.onAbort = () => sender.aborted(this);
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

export class RemoteSender {
  private opened = false;
  private cap = 0;
  private credits = 0;
  private readonly queue = new WaitList<PendingSend>();
  /** Values written and not yet acknowledged; `null` for a send that already resolved on credit. */
  private readonly unacked = new Deque<PendingSend | null>();
  // totals since the stream opened, for the check of §5.2 as ACKs arrive
  private valuesWritten = 0;
  private acksArrived = 0;
  private waitingDrain = false;
  /** Values sent on credit that the owner refused because it closed first. */
  refused = 0;

  constructor(
    private readonly fs: FrameWriter,
    private readonly ctx: StreamContext,
  ) {}

  /** The owner accepted the stream: `credits` values may go before its first ACK. */
  open(capacity: number, credits: number): void {
    this.opened = true;
    this.cap = capacity;
    this.credits = credits;
    this.pump();
  }

  send(value: unknown, signal: AbortSignal | undefined, holder: object | undefined): Promise<void> {
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
      if (signal) op.watch(signal, this);
      return op.promise;
    }
    const op = new PendingSend(value, holder);
    this.queue.push(op);
    if (signal) op.watch(signal, this);
    // queued behind congestion with credit left: nothing else would wake the queue up
    if (this.opened && this.credits > 0) this.pump();
    return op.promise;
  }

  /** Sends at once on a buffered channel with credit left; false where `send` would wait. */
  trySend(value: unknown): boolean {
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

  /** Checks an arriving ACK of `n` against the values written (§5.2); throws the violation. */
  admitAck(n: number): void {
    if (n > this.valuesWritten - this.acksArrived) throw violation(`ACK of ${n} with ${this.valuesWritten - this.acksArrived} values unacknowledged`);
    this.acksArrived += n;
  }

  /** The owner acknowledged `n` values: their credits come back, their rendezvous sends resolve. */
  acked(n: number): void {
    for (let i = 0; i < n && this.unacked.length > 0; i++) {
      const op = this.unacked.shift();
      this.credits++;
      op?.settle();
    }
    this.pump();
  }

  /**
   * The owner closed. Every ACK it sent before its CLOSE has been handled, so what is still
   * unacknowledged was refused, and what is queued will never go.
   */
  ownerClosed(closeError: () => Error | undefined): void {
    this.rejectQueued(() => closedError(closeError(), false));
    while (this.unacked.length > 0) {
      const op = this.unacked.shift();
      if (op) op.settle(closedError(closeError(), false));
      else this.refused++;
    }
  }

  /**
   * Sends not written yet reject with `error()`: they never left. The error is made only if a
   * send waits: an Error's stack trace costs more than the rest of a stream's end.
   */
  rejectQueued(error: () => NetchanError): void {
    if (this.queue.size === 0) return;
    const err = error();
    for (let op = this.queue.shift(); op; op = this.queue.shift()) op.settle(err);
  }

  /** Sends written and waiting for their ACK reject with `error()` (made only if one waits). */
  rejectUnacked(error: () => NetchanError): void {
    let err: NetchanError | undefined;
    while (this.unacked.length > 0) {
      const op = this.unacked.shift();
      if (op) op.settle((err ??= error()));
    }
  }

  /** The signal of a pending send aborted. @internal */
  aborted(op: PendingSend): void {
    if (op.settled) return;
    if (op.list) this.queue.remove(op);
    op.settle(
      netchanError(ErrorCodes.ABORTED, op.written ? 'send aborted after the value was written' : 'send aborted', {
        cause: op.signal?.reason,
        mayHaveBeenDelivered: op.written,
      }),
    );
  }

  private canWriteNow(): boolean {
    return this.opened && this.credits > 0 && this.queue.size === 0 && !this.fs.congested && this.fs.writable;
  }

  private writeValue(bytes: Uint8Array): void {
    this.fs.frame(FrameType.VALUE, bytes);
    this.valuesWritten++;
    this.ctx.counters.valuesOut++;
  }

  /**
   * Writes queued sends while credit lasts. Congested, it waits for the stream to drain: a queue
   * of thousands of sends would otherwise be framed in one synchronous run.
   */
  private pump(): void {
    while (this.opened && this.credits > 0 && this.queue.size > 0 && this.fs.writable) {
      if (this.fs.congested) {
        if (!this.waitingDrain) {
          this.waitingDrain = true;
          this.fs.onceDrain(() => {
            this.waitingDrain = false;
            this.pump();
          });
        }
        return;
      }
      const op = this.queue.shift() as PendingSend;
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
}
