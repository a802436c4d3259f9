/**
 * Go's channels in process: rendezvous (capacity 0) or buffered, FIFO, close that drains,
 * abortable waits, and `select`. Knows nothing of the network. The session layer serves a local
 * channel to a peer the way `select` waits on one: it parks {@link Waiter}s in the channel's wait
 * lists, which it reaches through {@link channelWaits} only, so that the methods of a program's
 * Channel are the ones it documents.
 *
 * Over 400 lines: one class (and `select`, which shares its wait lists) with its documentation.
 */
import { ErrorCodes, netchanError, NetchanError } from './errors.js';
import { Deque, WaitList, type WaitNode } from './queue.js';

/** Options of a blocking channel operation. */
export interface OperationOptions {
  /** Aborts the wait. An aborted `send` never delivers its value; an aborted `receive` never takes one. */
  signal?: AbortSignal;
}

/** The result of {@link Channel.tryReceive}. */
export type TryReceiveResult<T> = { ok: true; value: T } | { ok: false; closed: boolean };

/**
 * What every channel offers, local or remote: the interface `session.channel(name)` returns too.
 */
export interface ChannelLike<T> extends AsyncIterable<T> {
  /** Sends a value; resolves once a receiver took it (capacity 0) or it was buffered. */
  send(value: T, options?: OperationOptions): Promise<void>;
  /** Receives the next value; rejects `ERR_CHANNEL_CLOSED` once closed and drained. */
  receive(options?: OperationOptions): Promise<T>;
  /** Sends without waiting: true if a receiver took the value or it was buffered. */
  trySend(value: T): boolean;
  /** Receives without waiting. */
  tryReceive(): TryReceiveResult<T>;
  /** Closes the channel, optionally with an error that receivers see as `cause`. */
  close(error?: Error): void;
  /** True once closed (buffered values may still be waiting to be received). */
  readonly closed: boolean;
  /** The buffer size: 0 for a rendezvous channel. */
  readonly capacity: number;
  /** Values waiting in the buffer. */
  readonly length: number;
}

/**
 * Whoever waits on a {@link Waiter}: a single operation, a select, or the session's port on a
 * channel it serves. The channel calls it synchronously as the waiter is served: `complete` with
 * the value received (`ok` false: closed and drained) or, for a send, once the value was taken;
 * `fail` when a send is refused because the channel closed. @internal
 */
export interface Completion {
  complete(waiter: Waiter, value: unknown, ok: boolean): void;
  fail(waiter: Waiter, error: Error): void;
  /**
   * For a send: its value was taken by a receiver that has not handed it to a program yet (a
   * peer's receive demand on a rendezvous channel). The send is committed: no other select case
   * fires, an abort no longer withdraws the value (it rejects with `mayHaveBeenDelivered`). It
   * completes once the program took the value, or waits again if it comes back ({@link unhold}).
   */
  hold?(waiter: Waiter): void;
  /** A held send's value came back: false if the send gave up meanwhile (the value goes nowhere). */
  unhold?(waiter: Waiter): boolean;
  /**
   * For a receive: true if it takes values for a peer whose program has yet to take them, so
   * that the senders of a rendezvous channel wait for that ({@link completeHeld} instead of
   * `complete`).
   */
  readonly holdsSends?: boolean;
  /** The receive got the value of `sender`, which now waits held until this side completes it. */
  completeHeld?(waiter: Waiter, sender: Waiter): void;
}

/**
 * A channel's wait lists, for those outside the class that wait on channels as `select` does:
 * `select` itself and the session's port on a channel it serves to a peer
 * (lib/session/local-port.ts). Functions of the channel rather than its methods, so that a
 * program's Channel shows only what it documents. @internal
 */
export interface ChannelWaits {
  /** Gives `value` to a waiting receiver or the buffer; false if neither can take it. */
  offer<T>(ch: Channel<T>, value: T): boolean;
  /** True if a receive would not block. */
  canTake(ch: Channel<unknown>): boolean;
  /** Takes the next value; the caller made sure there is one ({@link ChannelWaits.canTake}). */
  take<T>(ch: Channel<T>): T;
  /** Parks a waiter among the senders or the receivers, as its `sending` says. */
  park(ch: Channel<unknown>, waiter: Waiter): void;
  /** Hands a send to a waiting peer's receive, held ({@link Completion.hold}); false if none waits first. */
  offerHeld(ch: Channel<unknown>, sender: Waiter): boolean;
  /**
   * Takes the first waiting sender of a channel with nothing buffered without completing it, if
   * its owner can hold ({@link Completion.hold}): the caller completes it once the value reached
   * a program, or gives it back with {@link ChannelWaits.unhold}. Null when there is none.
   */
  hold(ch: Channel<unknown>): Waiter | null;
  /** A held sender's value never reached a program: the sender waits again, first in line. */
  unhold(ch: Channel<unknown>, sender: Waiter): void;
}

/** Set by Channel's static block: only code inside the class may reach its private members. */
let waits: ChannelWaits;

/** See {@link ChannelWaits}. @internal */
export function channelWaits(): ChannelWaits {
  return waits;
}

/** A blocked send or receive, linked into a channel's wait list. @internal */
export class Waiter implements WaitNode {
  prev: WaitNode | null = null;
  next: WaitNode | null = null;
  list: WaitList<WaitNode> | null = null;
  constructor(
    /** For a send: the value offered. */
    public value: unknown,
    public readonly owner: Completion,
    /** The select case index, or 0. */
    public readonly index: number,
    /** True for a send case. */
    public readonly sending: boolean,
  ) {}
}

const RESOLVED: Promise<void> = Promise.resolve();

function closedError(cause: Error | undefined): NetchanError {
  return netchanError(ErrorCodes.CHANNEL_CLOSED, 'channel is closed', { cause });
}

function abortError(signal: AbortSignal, held = false): NetchanError {
  if (held) return netchanError(ErrorCodes.ABORTED, 'send aborted after a peer took the value', { cause: signal.reason, mayHaveBeenDelivered: true });
  return netchanError(ErrorCodes.ABORTED, 'operation aborted', { cause: signal.reason });
}

/** One pending `send` or `receive`: a promise and, when a signal is given, its abort listener. */
class SingleOperation implements Completion {
  done = false;
  /** A send whose value a peer took ({@link Completion.hold}). */
  private held = false;
  resolve!: (value: unknown) => void;
  reject!: (error: Error) => void;
  readonly promise: Promise<unknown>;
  private signal: AbortSignal | undefined;
  private onAbort: (() => void) | undefined;

  constructor() {
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  watch(signal: AbortSignal, waiter: Waiter): void {
    this.signal = signal;
    this.onAbort = () => {
      if (this.done) return;
      this.done = true;
      waiter.list?.remove(waiter);
      this.reject(abortError(signal, this.held));
    };
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  complete(_waiter: Waiter, value: unknown): void {
    if (this.done) return; // aborted while held
    this.done = true;
    this.unwatch();
    this.resolve(value);
  }

  fail(_waiter: Waiter, error: Error): void {
    if (this.done) return;
    this.done = true;
    this.unwatch();
    this.reject(error);
  }

  hold(_waiter?: Waiter): void {
    this.held = true;
  }

  unhold(): boolean {
    this.held = false;
    return !this.done;
  }

  private unwatch(): void {
    if (this.signal && this.onAbort) this.signal.removeEventListener('abort', this.onAbort);
    this.signal = this.onAbort = undefined;
  }
}

/**
 * A Go channel. Capacity 0 (the default) is a rendezvous: `send` resolves only once a receiver
 * has taken the value. Capacity N buffers N values. Waiting senders and receivers are served
 * first come, first served.
 *
 * @example
 * const ch = new Channel<number>(8);
 * (async () => { for (let i = 0; i < 3; i++) await ch.send(i); ch.close(); })();
 * for await (const v of ch) console.log(v);
 */
export class Channel<T> implements ChannelLike<T> {
  /**
   * Marks netchan channels across copies of this module (two installed versions, or one loaded
   * twice): a channel from another copy is refused with a clear error instead of being sent as a
   * plain object. @internal
   */
  get [Symbol.for('netchan.channel')](): true {
    return true;
  }

  static {
    waits = {
      offer: (ch, value) => ch.offer(value),
      canTake: (ch) => ch.canTake(),
      take: (ch) => ch.take(),
      park: (ch, waiter) => ch.park(waiter),
      offerHeld: (ch, sender) => ch.offerHeld(sender),
      hold: (ch) => ch.hold(),
      unhold: (ch, sender) => ch.unhold(sender),
    };
  }

  readonly capacity: number;
  private readonly buffer: Deque<T>;
  private readonly senders = new WaitList<Waiter>();
  private readonly receivers = new WaitList<Waiter>();
  private closeError: Error | undefined;
  private isClosed = false;
  private closeListeners: ((error: Error | undefined) => void)[] | null = null;

  /** @param capacity buffer size; 0 (default) makes a rendezvous channel. */
  constructor(capacity = 0) {
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, `capacity must be a non-negative integer, got ${capacity}`);
    }
    this.capacity = capacity;
    this.buffer = new Deque<T>(capacity);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  get length(): number {
    return this.buffer.length;
  }

  /** The error the channel was closed with, if any. */
  get closeReason(): Error | undefined {
    return this.closeError;
  }

  send(value: T, options?: OperationOptions): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError(this.closeError));
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.receivers.peek()?.owner.holdsSends !== true) {
      if (this.offer(value)) return RESOLVED;
    }
    const op = new SingleOperation();
    const waiter = new Waiter(value, op, 0, true);
    if (signal) op.watch(signal, waiter);
    if (!this.offerHeld(waiter)) this.senders.push(waiter);
    return op.promise as Promise<void>;
  }

  receive(options?: OperationOptions): Promise<T> {
    const signal = options?.signal;
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.buffer.length > 0 || this.senders.size > 0) return Promise.resolve(this.take());
    if (this.isClosed) return Promise.reject(closedError(this.closeError));
    const op = new SingleOperation();
    const waiter = new Waiter(undefined, op, 0, false);
    this.receivers.push(waiter);
    if (signal) op.watch(signal, waiter);
    return op.promise as Promise<T>;
  }

  trySend(value: T): boolean {
    if (this.isClosed) throw closedError(this.closeError);
    return this.offer(value);
  }

  tryReceive(): TryReceiveResult<T> {
    if (this.buffer.length > 0 || this.senders.size > 0) return { ok: true, value: this.take() };
    return { ok: false, closed: this.isClosed };
  }

  /**
   * Closes the channel. Buffered values still drain; then receivers get `ERR_CHANNEL_CLOSED`
   * (with `error` as its `cause`). Waiting senders are rejected. Closing twice is a no-op.
   */
  close(error?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeError = error;
    const err = closedError(error);
    for (let w = this.senders.shift(); w; w = this.senders.shift()) w.owner.fail(w, err);
    for (let w = this.receivers.shift(); w; w = this.receivers.shift()) {
      if (w.owner instanceof SingleOperation) w.owner.fail(w, err);
      else w.owner.complete(w, undefined, false);
    }
    const listeners = this.closeListeners;
    this.closeListeners = null;
    if (listeners) for (const listener of listeners) listener(error);
  }

  /**
   * Calls `listener` once when the channel closes (at once if it is closed already).
   * Returns a function that removes the listener. For adapters such as the network session.
   */
  onClose(listener: (error: Error | undefined) => void): () => void {
    if (this.isClosed) {
      listener(this.closeError);
      return () => {};
    }
    (this.closeListeners ??= []).push(listener);
    return () => {
      const list = this.closeListeners;
      if (!list) return;
      const i = list.indexOf(listener);
      if (i >= 0) list.splice(i, 1);
    };
  }

  /** Receivers currently blocked in `receive` (or a `select` receive case). */
  get waitingReceivers(): number {
    return this.receivers.size;
  }

  /** Senders currently blocked in `send` (or a `select` send case). */
  get waitingSenders(): number {
    return this.senders.size;
  }

  /**
   * Puts a value back at the head of the channel, ahead of everything waiting: for a value that
   * was taken but never reached a program (its receiver went away). Hands it straight to a
   * waiting receiver if there is one; otherwise it may exceed `capacity` by the values returned.
   * Works on a closed channel too, so that returned values still drain.
   */
  returnValue(value: T): void {
    const receiver = this.receivers.shift();
    if (receiver) {
      receiver.owner.complete(receiver, value, true);
      return;
    }
    this.buffer.unshift(value);
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    const waiting = channelIterator(this, () => this.closeError);
    // a value at hand resolves the step itself: no receive promise and no `then` in between
    return {
      next: () => (this.buffer.length > 0 || this.senders.size > 0 ? Promise.resolve({ value: this.take(), done: false }) : waiting.next()),
    };
  }

  private offer(value: T): boolean {
    const receiver = this.receivers.shift();
    if (receiver) {
      receiver.owner.complete(receiver, value, true);
      return true;
    }
    if (this.buffer.length < this.capacity) {
      this.buffer.push(value);
      return true;
    }
    return false;
  }

  /** The caller made sure there is a value (buffered or a waiting sender). */
  private take(): T {
    if (this.buffer.length > 0) {
      const value = this.buffer.shift();
      const sender = this.senders.shift();
      if (sender) {
        this.buffer.push(sender.value as T);
        sender.owner.complete(sender, undefined, true);
      }
      return value;
    }
    const sender = this.senders.shift() as Waiter;
    sender.owner.complete(sender, undefined, true);
    return sender.value as T;
  }

  /**
   * Hands a send to a waiting receiver that holds sends ({@link Completion.holdsSends}: a peer's
   * receive), the send held until the peer's program took the value. False if the first waiting
   * receiver is none such.
   */
  private offerHeld(sender: Waiter): boolean {
    const receiver = this.receivers.peek();
    if (receiver === null || receiver.owner.holdsSends !== true) return false;
    this.receivers.shift();
    sender.owner.hold?.(sender);
    receiver.owner.completeHeld?.(receiver, sender);
    return true;
  }

  private hold(): Waiter | null {
    const sender = this.buffer.length === 0 ? this.senders.peek() : null;
    if (sender === null || sender.owner.hold === undefined) return null;
    this.senders.shift();
    sender.owner.hold(sender);
    return sender;
  }

  private unhold(sender: Waiter): void {
    const owner = sender.owner;
    if (owner.unhold?.(sender) !== true) return;
    if (this.isClosed) {
      owner.fail(sender, closedError(this.closeError));
      return;
    }
    if (this.offerHeld(sender)) return;
    const receiver = this.receivers.shift();
    if (receiver === null) {
      this.senders.unshift(sender);
      return;
    }
    receiver.owner.complete(receiver, sender.value, true);
    owner.complete(sender, undefined, true);
  }

  private canTake(): boolean {
    return this.buffer.length > 0 || this.senders.size > 0;
  }

  private park(waiter: Waiter): void {
    (waiter.sending ? this.senders : this.receivers).push(waiter);
  }
}

/** A case of {@link select}: receive from a channel, or send a value into one. */
export type SelectCase<T = unknown> = { receive: Channel<T> } | { send: Channel<T>; value: T };

/** What {@link select} resolves to. */
export interface SelectResult<T = unknown> {
  /** Index of the case that fired, or -1 when `default` was taken. */
  index: number;
  /** For a receive case: the value received (undefined when `ok` is false). */
  value?: T;
  /** False when a receive case fired because its channel is closed and drained. */
  ok: boolean;
}

/** Options of {@link select}. */
export interface SelectOptions extends OperationOptions {
  /** When true and no case is ready, resolve at once with `index: -1`. Default false. */
  default?: boolean;
}

class SelectOperation implements Completion {
  done = false;
  waiters: Waiter[] = [];

  constructor(private readonly cases: SelectCase[]) {}

  resolve!: (result: SelectResult<unknown>) => void;
  reject!: (error: Error) => void;
  readonly promise = new Promise<SelectResult<unknown>>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
  signal: AbortSignal | undefined;
  /** The send case whose value a peer took ({@link Completion.hold}): the one that fires. */
  private held: Waiter | null = null;
  readonly onAbort = (): void => {
    if (this.done) return;
    const held = this.held !== null;
    this.finish();
    this.reject(abortError(this.signal as AbortSignal, held));
  };

  complete(waiter: Waiter, value: unknown, ok: boolean): void {
    if (this.done) return; // aborted while held
    this.finish();
    this.resolve(ok && !waiter.sending ? { index: waiter.index, value, ok } : { index: waiter.index, ok });
  }

  fail(_waiter: Waiter, error: Error): void {
    if (this.done) return;
    this.finish();
    this.reject(error);
  }

  /** Watches `signal`, if any; returns the select's promise. */
  watch(signal: AbortSignal | undefined): Promise<SelectResult<unknown>> {
    if (signal) {
      this.signal = signal;
      signal.addEventListener('abort', this.onAbort, { once: true });
    }
    return this.promise;
  }

  hold(waiter: Waiter): void {
    // committed to this case: the others withdraw now, the select settles when the peer's program takes the value
    this.held = waiter;
    for (const w of this.waiters) if (w !== waiter) w.list?.remove(w);
  }

  /**
   * The value came back: the other cases, withdrawn when the peer took it, wait again, and one
   * that is ready now fires instead (then the value goes nowhere: that send did not happen).
   */
  unhold(waiter: Waiter): boolean {
    if (this.done) return false;
    this.held = null;
    const cases = this.cases;
    for (let index = 0; index < cases.length; index++) {
      if (index === waiter.index) continue;
      const c = cases[index] as SelectCase;
      if ('receive' in c) {
        if (waits.canTake(c.receive)) return this.fire({ index, value: waits.take(c.receive), ok: true });
        if (c.receive.closed) return this.fire({ index, ok: false });
      } else {
        if (c.send.closed) {
          this.finish();
          this.reject(closedError(c.send.closeReason));
          return false;
        }
        if (waits.offer(c.send, c.value)) return this.fire({ index, ok: true });
      }
    }
    const waiters = [waiter];
    for (let index = 0; index < cases.length; index++) {
      if (index === waiter.index) continue;
      const c = cases[index] as SelectCase;
      const sending = 'send' in c;
      const w = new Waiter(sending ? c.value : undefined, this, index, sending);
      waiters.push(w);
      waits.park(sending ? c.send : c.receive, w);
    }
    this.waiters = waiters;
    return true;
  }

  private fire(result: SelectResult<unknown>): false {
    this.finish();
    this.resolve(result);
    return false;
  }

  private finish(): void {
    this.done = true;
    for (const w of this.waiters) w.list?.remove(w);
    this.signal?.removeEventListener('abort', this.onAbort);
  }
}

/**
 * Waits on several channel operations and performs exactly one: the others take and give
 * nothing. Among cases ready at once, one is picked at random (as in Go). A receive case on a
 * closed and drained channel fires with `ok: false`; a send case on a closed channel rejects
 * with `ERR_CHANNEL_CLOSED`.
 */
export function select<T = unknown>(cases: SelectCase<T>[], options: SelectOptions = {}): Promise<SelectResult<T>> {
  const { signal } = options;
  if (signal?.aborted) return Promise.reject(abortError(signal));
  const n = cases.length;
  const start = n > 1 ? Math.floor(Math.random() * n) : 0;
  for (let k = 0; k < n; k++) {
    const index = (start + k) % n;
    const c = cases[index] as SelectCase<T>;
    if ('receive' in c) {
      const ch = c.receive;
      if (waits.canTake(ch)) return Promise.resolve({ index, value: waits.take(ch), ok: true });
      if (ch.closed) return Promise.resolve({ index, ok: false });
    } else {
      const ch = c.send;
      if (ch.closed) return Promise.reject(closedError(ch.closeReason));
      if (!options.default && ch.waitingReceivers > 0) {
        const op = new SelectOperation(cases as SelectCase[]);
        const waiter = new Waiter(c.value, op, index, true);
        op.waiters.push(waiter);
        // a peer's receive: this case fires once the peer's program took the value
        if (waits.offerHeld(ch, waiter)) return op.watch(signal) as Promise<SelectResult<T>>;
      }
      if (waits.offer(ch, c.value)) return Promise.resolve({ index, ok: true });
    }
  }
  if (options.default) return Promise.resolve({ index: -1, ok: false });
  if (n === 0) {
    return Promise.reject(netchanError(ErrorCodes.INVALID_ARGUMENT, 'select with no cases and no default would block forever'));
  }
  const op = new SelectOperation(cases as SelectCase[]);
  for (let index = 0; index < n; index++) {
    const c = cases[index] as SelectCase<T>;
    const sending = 'send' in c;
    const waiter = new Waiter(sending ? c.value : undefined, op, index, sending);
    op.waiters.push(waiter);
    waits.park(sending ? c.send : c.receive, waiter);
  }
  return op.watch(signal) as Promise<SelectResult<T>>;
}

/**
 * The `for await` iterator of a channel when no value is at hand: values until the channel is
 * closed and drained, then done (or the close error thrown).
 */
function channelIterator<T>(ch: { receive(): Promise<T> }, closeError: () => Error | undefined): AsyncIterator<T> {
  const step = (value: T): IteratorResult<T> => ({ value, done: false });
  const end = (err: unknown): IteratorResult<T> => {
    if (err instanceof NetchanError && err.code === ErrorCodes.CHANNEL_CLOSED) {
      const reason = closeError();
      if (reason) throw reason;
      return { value: undefined, done: true };
    }
    throw err;
  };
  return { next: () => ch.receive().then(step, end) };
}
