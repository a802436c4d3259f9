/**
 * The program's handle on a remote channel: a thin face on the session's {@link RemoteEndpoint},
 * kept apart from it so that the session never references the handle. A handle the program
 * drops can then be collected, and a FinalizationRegistry releases its stream.
 */
import type { ChannelLike, OperationOptions, TryReceiveResult } from '../core/channel.js';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import type { RemoteEndpoint } from './remote-endpoint.js';

const RESOLVED: Promise<void> = Promise.resolve();

/** The operation a one-way handle does not have: nothing happened. */
function oneWay(operation: string, only: string): NetchanError {
  return netchanError(ErrorCodes.INVALID_ARGUMENT, `this handle only ${only}s: ${operation} is not possible on it`, { mayHaveBeenDelivered: false });
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
 *
 * The two handles of a pair stream (`dial`'s `send` and `receive`, docs/PROTOCOL.md §5.5) are
 * one-way: the other direction's operations reject with `ERR_INVALID_ARGUMENT` (the `try`
 * forms throw it), `close()` closes the handle's own channel, and the stream is released once
 * both handles are.
 */
export class RemoteChannel<T = unknown> implements ChannelLike<T>, Disposable, AsyncDisposable {
  /** See {@link Channel}: the mark of a netchan channel across module copies. @internal */
  get [Symbol.for('netchan.channel')](): true {
    return true;
  }

  /**
   * `only`: a handle on one channel of a pair stream (docs/PROTOCOL.md §5.5), which either only
   * receives or only sends. @internal
   */
  constructor(
    private readonly endpoint: RemoteEndpoint<T>,
    private readonly only?: 'receive' | 'send',
  ) {
    dropped.register(this, endpoint as RemoteEndpoint<unknown>);
  }

  /** Whether this handle only receives or only sends (one channel of a pair stream). @internal */
  get direction(): 'receive' | 'send' | undefined {
    return this.only;
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
    if (this.only === 'receive') return Promise.reject(oneWay('send', 'receive'));
    return this.endpoint.send(value, options, this);
  }

  trySend(value: T): boolean {
    if (this.only === 'receive') throw oneWay('send', 'receive');
    return this.endpoint.trySend(value);
  }

  receive(options?: OperationOptions): Promise<T> {
    if (this.only === 'send') return Promise.reject(oneWay('receive', 'send'));
    return this.endpoint.receive(options, this);
  }

  tryReceive(): TryReceiveResult<T> {
    if (this.only === 'send') throw oneWay('receive', 'send');
    return this.endpoint.tryReceive();
  }

  /** Closes the channel on the owner's side (close propagates), with an optional error. */
  close(error?: Error): void {
    this.endpoint.close(error);
  }

  /** A forwarder's receive: see {@link RemoteEndpoint.lend}. @internal */
  lend(signal: AbortSignal): Promise<T> {
    return this.endpoint.lend(signal) as Promise<T>;
  }

  /** See {@link RemoteEndpoint.confirmLent}. @internal */
  confirmLent(n: number): void {
    this.endpoint.confirmLent(n);
  }

  /** See {@link RemoteEndpoint.returnLent}. @internal */
  returnLent(value: T): void {
    this.endpoint.returnLent(value);
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
    if (this.only === 'send') throw oneWay('receive', 'send');
    // the iterator holds the handle: a `for await` over a handle keeps it
    return { next: () => this.endpoint.nextValue(true, undefined, this) as Promise<IteratorResult<T>> };
  }
}
