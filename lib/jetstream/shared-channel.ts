/**
 * One shared channel as one netchan server serves it (docs/cluster.md). Its values live in a
 * JetStream work-queue stream; every server pulls from one durable consumer, so receivers on all
 * servers compete. A value is pulled when a receiver waits for one (a client's handle through
 * its stream's port, or the server's own `receive`) and acknowledged to JetStream only once that
 * receiver's program took it: a value a dead server held goes to another after the ack wait.
 *
 * Every handle on it is a rendezvous over the wire (its port reports capacity 0): a client's
 * send completes at its ACK, which comes once JetStream stored the value, and a client's
 * receive takes one value at a time, none prefetched. The channel's capacity is the stream's:
 * at most that many values published and not yet taken, and a send waits for room.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { OperationOptions, TryReceiveResult } from '../core/channel.js';
import { debug } from '../core/debug.js';
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { Deque } from '../core/queue.js';
import { Codec } from '../wire/codec.js';
import { NOTHING, type OwnerPort, type PortListener, type PortSource } from '../session/channel-stream.js';
import type { BackedChannel } from '../server/server.js';
import { isStreamFull, type Engine, type PulledMessage } from './engine.js';

const codec = new Codec();
/** Longest a pull waits for values, in ms: a wait this long is asked again. */
const PULL_EXPIRES_MS = 2000;
/** A pull after close waits this long at most (the least the client allows), then looks whether the stream is empty. */
const DRAIN_POLL_MS = 1000;
/** Most values one pull asks for. */
const MAX_PULL = 256;
/** How long a publish waits for JetStream's acknowledgement before it is tried again (same message id). */
const PUBLISH_TIMEOUT_MS = 5000;
/** Room kept in a NATS message for its headers (the message id). */
const HEADER_ROOM = 256;

/** A value pulled from JetStream, held by this server until acknowledged or given back. */
interface Item {
  /** The latest delivery of it: the one an acknowledgement must name. */
  msg: PulledMessage;
  value: unknown;
  settled: boolean;
}

/** Whoever waits for a value: a port's single wait, or a `receive` of the server's program. */
interface Taker {
  take(item: Item): void;
  exhausted(): void;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * Encodes a value for JetStream: references cannot go there, nor more than a NATS message holds.
 * Throws `ERR_NOT_SHAREABLE` (after letting go of the references) or `ERR_VALUE_TOO_LARGE`.
 */
function encodeShared(value: unknown, name: string, maxBytes: number): Uint8Array {
  const refs: object[] = [];
  let bytes: Uint8Array;
  try {
    bytes = codec.encode(value, {
      encodeReference(_kind, obj) {
        refs.push(obj);
        throw netchanError(ErrorCodes.NOT_SHAREABLE, `a value on the shared channel ${JSON.stringify(name)} holds a channel or byte stream: JetStream keeps bytes, not streams (docs/cluster.md)`, { mayHaveBeenDelivered: false });
      },
      decodeReference() {
        return null;
      },
    });
  } catch (err) {
    // a client's value arrives with its references taken: nothing else will ever use them
    for (const obj of refs) {
      if (typeof (obj as { release?: unknown }).release === 'function') (obj as { release(): void }).release();
      else if (typeof (obj as Duplex).destroy === 'function') (obj as Duplex).destroy();
    }
    if (err instanceof NetchanError) throw netchanError(err.code, err.message, { cause: err.cause, mayHaveBeenDelivered: false });
    throw err;
  }
  if (bytes.length > maxBytes) {
    throw netchanError(ErrorCodes.VALUE_TOO_LARGE, `encoded value is ${bytes.length} bytes, more than a NATS message of the shared channel ${JSON.stringify(name)} holds (${maxBytes})`, { mayHaveBeenDelivered: false });
  }
  return bytes;
}

/** Publishes in order, one at a time, each value under its own message id (see docs/cluster.md, exactly once). */
class Publisher {
  private readonly queue = new Deque<{ bytes: Uint8Array; done: (err?: NetchanError) => void; signal?: AbortSignal }>();
  private readonly prefix = randomBytes(8).toString('hex');
  private seq = 0;
  private running = false;
  private stopped = false;

  constructor(private readonly ch: SharedChannel<unknown>) {}

  push(bytes: Uint8Array, done: (err?: NetchanError) => void, signal?: AbortSignal): void {
    this.queue.push({ bytes, done, signal });
    if (!this.running) void this.run();
  }

  /** Drops what was not published yet; the one being published may still land. */
  stop(): void {
    this.stopped = true;
    this.queue.clear();
  }

  private async run(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0 && !this.stopped) {
      const next = this.queue.shift();
      const err = await this.ch.publish(next.bytes, `${this.prefix}.${++this.seq}`, next.signal);
      next.done(err);
    }
    this.running = false;
  }
}

/** The owner port of one client stream on a shared channel. */
class SharedPort implements OwnerPort {
  /** Values sent to the peer and not yet acknowledged by it, first first. */
  private readonly held = new Deque<Item>();
  private taker: Taker | null = null;
  private readonly publisher: Publisher;
  private detached = false;

  constructor(
    private readonly ch: SharedChannel<unknown>,
    private readonly listener: PortListener,
  ) {
    this.publisher = new Publisher(ch);
  }

  /** A rendezvous over the wire: sends complete once stored, receives take one value at a time. */
  get capacity(): number {
    return 0;
  }

  get closed(): boolean {
    return this.ch.closed;
  }

  get closeReason(): Error | undefined {
    return this.ch.closeReason;
  }

  get drained(): boolean {
    return this.ch.drained;
  }

  get waiting(): boolean {
    return this.taker !== null;
  }

  close(error?: Error): void {
    this.ch.close(error);
  }

  onClose(listener: (error: Error | undefined) => void): () => void {
    return this.ch.onClose(listener);
  }

  give(value: unknown): boolean {
    // a value with references fails the peer's stream with ERR_NOT_SHAREABLE (thrown here)
    const bytes = encodeShared(value, this.ch.name, this.ch.maxValueBytes);
    this.publisher.push(bytes, (err) => {
      if (!err && !this.detached) this.listener.given();
    });
    return false;
  }

  tryTake(): unknown {
    const item = this.ch.takeBuffered();
    if (!item) return NOTHING;
    this.held.push(item);
    return item.value;
  }

  awaitValue(): void {
    const taker: Taker = {
      take: (item) => {
        this.taker = null;
        this.held.push(item);
        this.listener.taken(item.value);
      },
      exhausted: () => {
        this.taker = null;
        this.listener.exhausted();
      },
    };
    this.taker = taker;
    this.ch.wait(taker);
  }

  putBack(_value: unknown): void {
    // the peer's program never took it: JetStream gives it to the next receiver at once
    const item = this.held.length > 0 ? this.held.pop() : null;
    if (item) this.ch.giveBack(item);
  }

  delivered(n: number): void {
    for (let i = 0; i < n && this.held.length > 0; i++) this.ch.acknowledge(this.held.shift());
  }

  refuse(value: unknown, _error: Error): void {
    this.putBack(value);
  }

  detach(): void {
    this.detached = true;
    this.publisher.stop();
    if (this.taker) {
      this.ch.unwait(this.taker);
      this.taker = null;
    }
  }
}

/**
 * A channel shared by every netchan server on the same JetStream (made by
 * `backend.channel(name, capacity)` or `server.channel(name, capacity, { backend })`). Its
 * `send` resolves once JetStream stored the value (waiting while the stream holds `capacity`
 * values); `receive` resolves with a value once JetStream confirmed its acknowledgement, so
 * the value is this program's alone. Clients of any server reach it with `session.channel(name)`.
 */
export class SharedChannel<T> implements BackedChannel<T> {
  /** What the server serves to its clients' handles. @internal */
  readonly served: PortSource;
  /** The JetStream stream of the values. */
  readonly stream: string;
  /** The subject values are published on. */
  readonly subject: string;
  private readonly key: string;
  private readonly init: Promise<void>;
  private initialized = false;
  /** Values pulled with no taker left for them: the next takers get them. */
  private readonly buffer = new Deque<Item>();
  private readonly takers: Taker[] = [];
  /** Every value this server holds and has not settled, by stream sequence: kept from redelivery while held. */
  private readonly owned = new Map<number, Item>();
  private readonly publisher: Publisher;
  private closedWith: { error: Error | undefined } | null = null;
  private drainedKnown = false;
  private readonly closeListeners = new Set<(error: Error | undefined) => void>();
  private stopped = false;
  private pulling = false;
  private readonly heartbeat: NodeJS.Timeout;
  private idleRelease: NodeJS.Timeout | null = null;
  /** When a receiver last asked for a value here. */
  private lastWait = 0;
  private unwatch: (() => void) | null = null;

  /** @internal made by the backend */
  constructor(
    private readonly engine: Engine,
    readonly name: string,
    readonly capacity: number,
    private readonly onStop: (ch: SharedChannel<T>) => void,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, `a shared channel's capacity must be an integer of at least 1 (a rendezvous cannot span servers through JetStream), got ${capacity}`);
    }
    const names = SharedChannel.names(name);
    this.stream = names.stream;
    this.subject = names.subject;
    this.key = names.key;
    this.publisher = new Publisher(this as SharedChannel<unknown>);
    this.served = { capacity: 0, openPort: (listener) => new SharedPort(this as SharedChannel<unknown>, listener) };
    // JetStream gives a value to another receiver after the ack wait: held values say they are in work
    this.heartbeat = setInterval(() => {
      for (const item of this.owned.values()) item.msg.working();
    }, Math.max(50, Math.floor(engine.ackWaitMs / 3)));
    this.heartbeat.unref();
    this.init = this.setUp();
    this.init.catch((err) => {
      debug('shared channel %s: %s', name, (err as Error).message);
      this.closeLocally(err as Error);
    });
  }

  /** The JetStream names of a channel: its name's bytes outside `[A-Za-z0-9-]` written `_xx`. @internal */
  static names(name: string): { stream: string; subject: string; key: string } {
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'channel name must be a string of 1 to 256 characters');
    }
    let key = '';
    for (const b of Buffer.from(name, 'utf8')) {
      const c = String.fromCharCode(b);
      key += /[A-Za-z0-9-]/.test(c) ? c : `_${b.toString(16).padStart(2, '0')}`;
    }
    return { stream: `NETCHAN_${key}`, subject: `netchan.${key}`, key };
  }

  private async setUp(): Promise<void> {
    let capacity: number;
    let marker: string | null = null;
    try {
      capacity = await this.engine.ensureStream(this.stream, this.subject, this.capacity);
      if (capacity === this.capacity) {
        await this.engine.ensureConsumer(this.stream);
        this.unwatch = await this.engine.watchClose(this.key, (m) => this.markerSeen(m));
        marker = await this.engine.closeMarker(this.key);
      }
    } catch (err) {
      throw netchanError(ErrorCodes.BACKEND, `cannot set up the JetStream stream ${this.stream}: ${(err as Error).message}`, { cause: err });
    }
    if (capacity !== this.capacity) {
      throw netchanError(ErrorCodes.BACKEND, `the shared channel ${JSON.stringify(this.name)} exists with capacity ${capacity}, not ${this.capacity}`);
    }
    if (marker !== null) this.markerSeen(marker);
    this.initialized = true;
    this.pull();
  }

  /** Resolves once the stream, the consumer and the close watch are set up; rejects `ERR_BACKEND` if they cannot be. */
  ready(): Promise<void> {
    return this.init;
  }

  get closed(): boolean {
    return this.closedWith !== null;
  }

  /** The error the channel was closed with, if any. */
  get closeReason(): Error | undefined {
    return this.closedWith?.error;
  }

  /** Closed, and the stream held no value when last looked at. @internal */
  get drained(): boolean {
    return this.closedWith !== null && this.drainedKnown && this.buffer.length === 0;
  }

  /** Values this server pulled and holds for no receiver yet (the stream's values are in the stream). */
  get length(): number {
    return this.buffer.length;
  }

  /**
   * Closes the channel on every server: sends from then on reject `ERR_CHANNEL_CLOSED`; receivers
   * take what the stream still holds, then end. The close is kept in JetStream: a channel of this
   * name stays closed until `backend.remove(name)`.
   */
  close(error?: Error): void {
    if (this.closedWith) return;
    const marker = JSON.stringify({ error: error ? error.message : null });
    this.closeLocally(error);
    void (async () => {
      try {
        await this.init;
      } catch {
        return; // never set up: closed here, and nothing to tell the others
      }
      for (let attempt = 0; !this.stopped; attempt++) {
        try {
          await this.engine.markClosed(this.key, marker);
          return;
        } catch (err) {
          debug('shared channel %s: close marker not written yet: %s', this.name, (err as Error).message);
          await sleep(Math.min(1000, 50 * 2 ** attempt));
        }
      }
    })();
  }

  /** Calls `listener` once when the channel closes (here or on another server); returns what removes it. */
  onClose(listener: (error: Error | undefined) => void): () => void {
    if (this.closedWith) {
      queueMicrotask(() => listener(this.closedWith?.error));
      return () => {};
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  private markerSeen(marker: string): void {
    let error: Error | undefined;
    try {
      const m = JSON.parse(marker) as { error?: unknown };
      if (typeof m.error === 'string') error = new Error(m.error);
    } catch {
      // a marker not written by netchan still closes the channel
    }
    this.closeLocally(error);
  }

  private closeLocally(error: Error | undefined): void {
    if (this.closedWith) return;
    this.closedWith = { error };
    const listeners = [...this.closeListeners];
    this.closeListeners.clear();
    for (const l of listeners) l(error);
    this.pull();
  }

  /**
   * Publishes one value under `msgID` until JetStream stored it: waits while the stream is full,
   * tries again (same id, so JetStream keeps one) while NATS is away. Resolves with the error
   * when the channel closes first, or `signal` fires while it waits for room or for NATS. @internal
   */
  async publish(bytes: Uint8Array, msgID: string, signal?: AbortSignal): Promise<NetchanError | undefined> {
    let uncertain = false;
    let wait = 2;
    try {
      await this.init;
    } catch (err) {
      return netchanError(ErrorCodes.BACKEND, (err as Error).message, { cause: err, mayHaveBeenDelivered: false });
    }
    for (;;) {
      if (this.closedWith || this.stopped) {
        return netchanError(ErrorCodes.CHANNEL_CLOSED, 'channel is closed', { cause: this.closedWith?.error, mayHaveBeenDelivered: uncertain });
      }
      if (signal?.aborted) return netchanError(ErrorCodes.ABORTED, 'send aborted', { cause: signal.reason, mayHaveBeenDelivered: uncertain });
      try {
        await this.engine.publish(this.subject, bytes, msgID, PUBLISH_TIMEOUT_MS);
        return undefined;
      } catch (err) {
        if (isStreamFull(err)) {
          // no room: the sender waits, as on a full channel
          await sleep(wait);
          wait = Math.min(100, wait * 2);
          continue;
        }
        // refused by the NATS client itself (nothing was sent): trying again cannot help
        if ((err as Error).name === 'InvalidArgumentError') return netchanError(ErrorCodes.BACKEND, `NATS refused the publish: ${(err as Error).message}`, { cause: err, mayHaveBeenDelivered: uncertain });
        uncertain = true;
        debug('shared channel %s: publish failed, trying again: %s', this.name, (err as Error).message);
        await sleep(250);
      }
    }
  }

  /** Largest encoded value a NATS message holds beside its headers. @internal */
  get maxValueBytes(): number {
    return this.engine.maxPayload - HEADER_ROOM;
  }

  /** A port's wait for a value. @internal */
  wait(taker: Taker): void {
    this.lastWait = Date.now();
    const item = this.takeBuffered();
    if (item) return taker.take(item);
    if (this.drained) return taker.exhausted();
    this.takers.push(taker);
    this.pull();
  }

  /** A wait withdrawn (its stream went, or its receive was aborted). @internal */
  unwait(taker: Taker): void {
    const i = this.takers.indexOf(taker);
    if (i >= 0) this.takers.splice(i, 1);
  }

  /** A value pulled before and held for no one, if any. @internal */
  takeBuffered(): Item | undefined {
    return this.buffer.length > 0 ? this.buffer.shift() : undefined;
  }

  /** The receiver's program took the value: JetStream forgets it. @internal */
  acknowledge(item: Item): void {
    void this.ackConfirmed(item);
  }

  /** Acknowledges and waits for JetStream to confirm (double ack), trying again while NATS is away. */
  private async ackConfirmed(item: Item): Promise<boolean> {
    if (item.settled) return true;
    item.settled = true;
    for (let attempt = 0; attempt < 20 && !this.stopped; attempt++) {
      try {
        if (await item.msg.ackAck({ timeout: 2000 })) {
          this.owned.delete(item.msg.seq);
          return true;
        }
      } catch (err) {
        debug('shared channel %s: ack of %d not confirmed yet: %s', this.name, item.msg.seq, (err as Error).message);
      }
      // still held: the heartbeat keeps it from going to another receiver meanwhile
      await sleep(Math.min(1000, 50 * 2 ** attempt));
    }
    this.owned.delete(item.msg.seq);
    return false;
  }

  /** A value no receiver here took goes back to JetStream, for the next receiver anywhere. @internal */
  giveBack(item: Item): void {
    if (item.settled) return;
    item.settled = true;
    this.owned.delete(item.msg.seq);
    item.msg.nak();
  }

  /** Pulls while takers wait for more than is buffered; after close, ends them once the stream is empty. */
  private pull(): void {
    if (this.pulling || this.stopped || !this.initialized) return;
    if (this.takers.length === 0) return;
    this.pulling = true;
    void this.pullLoop().finally(() => {
      this.pulling = false;
      if (this.takers.length > 0 && !this.stopped) this.pull();
    });
  }

  private async pullLoop(): Promise<void> {
    while (!this.stopped && this.takers.length > 0) {
      if (this.closedWith) {
        try {
          if ((await this.engine.messages(this.stream)) === 0 && this.buffer.length === 0) {
            this.drainedKnown = true;
            for (const t of this.takers.splice(0)) t.exhausted();
            return;
          }
        } catch (err) {
          debug('shared channel %s: cannot look at the stream: %s', this.name, (err as Error).message);
        }
      }
      try {
        // for the receivers waiting, and `prefetch` more ready for the next ones
        const want = Math.max(1, Math.min(MAX_PULL, this.takers.length + this.engine.prefetch - this.buffer.length));
        const batch = await this.engine.fetch(this.stream, want, this.closedWith ? DRAIN_POLL_MS : PULL_EXPIRES_MS);
        for await (const msg of batch) this.arrived(msg);
      } catch (err) {
        debug('shared channel %s: pull failed: %s', this.name, (err as Error).message);
        await sleep(200);
      }
    }
  }

  private arrived(msg: PulledMessage): void {
    let value: unknown;
    try {
      value = codec.decode(msg.data);
    } catch (err) {
      // not a value netchan published: no receiver could take it
      debug('shared channel %s: message %d is no netchan value, terminated: %s', this.name, msg.seq, (err as Error).message);
      msg.term();
      return;
    }
    if (this.stopped) return msg.nak();
    const held = this.owned.get(msg.seq);
    if (held) {
      // JetStream gave a value held here to this server again (its ack wait ran out while NATS
      // was away): the one receiver it went to keeps it, and its ack now names this delivery
      held.msg = msg;
      return;
    }
    const item: Item = { msg, value, settled: false };
    this.owned.set(msg.seq, item);
    const taker = this.takers.shift();
    if (taker) return taker.take(item);
    // pulled ahead, or its receiver went while the pull was on: kept for the next one here, briefly
    this.buffer.push(item);
    this.releaseWhenIdle();
  }

  /** How long values pulled ahead wait here with no receiver asking before they go back to JetStream. */
  private get idleMs(): number {
    return Math.min(1000, Math.floor(this.engine.ackWaitMs / 3));
  }

  private releaseWhenIdle(): void {
    this.idleRelease ??= setTimeout(() => {
      this.idleRelease = null;
      if (this.buffer.length === 0) return;
      if (this.takers.length > 0 || Date.now() - this.lastWait < this.idleMs) return this.releaseWhenIdle();
      // no receiver here asked for a while: back to JetStream, for receivers elsewhere
      while (this.buffer.length > 0) this.giveBack(this.buffer.shift());
    }, this.idleMs).unref();
  }

  /**
   * Sends `value`: resolves once JetStream stored it, waiting while the stream is full. Rejects
   * `ERR_NOT_SHAREABLE` for a value with channels or byte streams, `ERR_CHANNEL_CLOSED` once the
   * channel is closed, `ERR_ABORTED` when `signal` fires while it waits for room or for NATS
   * (`mayHaveBeenDelivered` true, either way, when a publish had been tried without answer).
   */
  send(value: T, options: OperationOptions = {}): Promise<void> {
    if (this.closedWith) return Promise.reject(netchanError(ErrorCodes.CHANNEL_CLOSED, 'channel is closed', { cause: this.closedWith.error, mayHaveBeenDelivered: false }));
    if (options.signal?.aborted) return Promise.reject(netchanError(ErrorCodes.ABORTED, 'send aborted', { cause: options.signal.reason, mayHaveBeenDelivered: false }));
    let bytes: Uint8Array;
    try {
      bytes = encodeShared(value, this.name, this.maxValueBytes);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => this.publisher.push(bytes, (err) => (err ? reject(err) : resolve()), options.signal));
  }

  /**
   * Receives the next value: pulled from JetStream, acknowledged, and resolved once JetStream
   * confirmed the acknowledgement. Rejects `ERR_CHANNEL_CLOSED` once closed and drained.
   */
  receive(options: OperationOptions = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const signal = options.signal;
      if (signal?.aborted) return reject(netchanError(ErrorCodes.ABORTED, 'receive aborted', { cause: signal.reason }));
      const onAbort = () => {
        this.unwait(taker);
        reject(netchanError(ErrorCodes.ABORTED, 'receive aborted', { cause: signal?.reason }));
      };
      const taker: Taker = {
        take: (item) => {
          signal?.removeEventListener('abort', onAbort);
          void this.ackConfirmed(item).then((ok) => {
            if (ok) resolve(item.value as T);
            // unconfirmed, JetStream may give it to another receiver: this one takes the next
            else this.receive(options).then(resolve, reject);
          });
        },
        exhausted: () => {
          signal?.removeEventListener('abort', onAbort);
          reject(netchanError(ErrorCodes.CHANNEL_CLOSED, 'channel is closed', { cause: this.closedWith?.error }));
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.wait(taker);
    });
  }

  /** Never completes at once: a publish takes a round trip to JetStream. Always false; use `send`. */
  trySend(_value: T): boolean {
    return false;
  }

  /**
   * A value this server pulled and holds for no receiver, if any (acknowledged before it is
   * returned, without waiting for JetStream's confirmation).
   */
  tryReceive(): TryReceiveResult<T> {
    const item = this.takeBuffered();
    if (!item) return { ok: false, closed: this.drained };
    this.acknowledge(item);
    return { ok: true, value: item.value as T };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      try {
        yield await this.receive();
      } catch (err) {
        if (err instanceof NetchanError && err.code === ErrorCodes.CHANNEL_CLOSED) return;
        throw err;
      }
    }
  }

  /**
   * Stops serving here (the backend closes): values held go back to JetStream for other servers;
   * the channel stays open for them.
   */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.heartbeat);
    this.publisher.stop();
    this.unwatch?.();
    for (const item of [...this.owned.values()]) {
      if (!item.settled) this.giveBack(item);
    }
    this.buffer.clear();
    this.onStop(this);
  }
}
