/**
 * What client and server sessions share: the codec with this session's reference hooks, the
 * write flusher, the tables of channel streams, and the rules for channels and byte streams
 * inside values (docs/PROTOCOL.md §4–§6). Knows streams and frames, not Express.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Duplex, Readable, Stream, Writable, pipeline } from 'node:stream';
import { proveByteStream } from '../wire/byte-frames.js';
import { Channel } from '../core/channel.js';
import { ChannelExporter, RemoteChannel, RemoteEndpoint, type ExportableChannel } from './channel-stream.js';
import { CollectionTrigger } from './collector.js';
import { Codec, registerReferenceClass, type FoundReference, type ReferenceHooks, type ReferenceKind } from '../wire/codec.js';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import { Flusher, FramedStream } from './framed-stream.js';
import { PendingReferences, type Stats, type StreamContext } from './stream-context.js';
import type { WireStream } from '../transport/contract.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../wire/frames.js';

export { debug } from '../core/debug.js';
import { debug } from '../core/debug.js';

registerReferenceClass(Channel, 'channel');
registerReferenceClass(RemoteChannel, 'channel');
registerReferenceClass(Stream, 'bytes');
if (typeof ReadableStream === 'function') registerReferenceClass(ReadableStream, 'bytes');

/** Byte-stream direction, from the owner's side: r = owner's data flows out, w = flows in, d = both. */
export type BytesMode = 'r' | 'w' | 'd';

/** Limits and timings shared by client and server sessions. */
export interface SessionOptions {
  /** Largest frame payload accepted, in bytes. Default 1048576 (1 MiB). */
  maxFrameBytes?: number;
  /** Deepest nesting of a value accepted. Default 64. */
  maxDepth?: number;
  /** How long a value may wait for the streams of the references it names. Default 10000 ms. */
  referenceTimeoutMs?: number;
}

/** The server's default `maxChannelsPerSession`. */
export const DEFAULT_MAX_CHANNELS = 4096;

export function newSessionId(): string {
  return randomBytes(16).toString('hex');
}

/** Decides the byte-stream mode of a stream object, or throws ERR_ENCODE. */
export function bytesModeOf(obj: object): BytesMode {
  if (obj instanceof Duplex) return 'd';
  if (obj instanceof Readable) return 'r';
  if (obj instanceof Writable) return 'w';
  if (typeof ReadableStream === 'function' && obj instanceof ReadableStream) return 'r';
  throw netchanError(ErrorCodes.ENCODE, 'only Node Readable, Writable, Duplex and web ReadableStream can travel as byte streams');
}

/** How long a graceful close waits for the peer to end its side of each stream. */
const GRACEFUL_CLOSE_MS = 2000;

/** Joins a local stream object to the HTTP/2 stream that carries it, in the direction(s) of `mode`. */
export function joinBytes(local: object, wire: Duplex, mode: BytesMode, side: 'client' | 'server' = 'client'): void {
  const done = (err: Error | null | undefined) => {
    if (err) debug('byte stream ended with %s', err.message);
  };
  const source = typeof ReadableStream === 'function' && local instanceof ReadableStream ? Readable.fromWeb(local as never) : local;
  if (mode === 'r' || mode === 'd') pipeline(source as Readable, wire, done);
  // Nothing flows from a Writable. The server's side is the response: it ends only after the
  // request body, since proxies (nginx grpc_pass, Caddy) stop forwarding a request body once
  // its response is complete.
  else if (side === 'server') wire.once('end', () => wire.end());
  else wire.end();
  if (mode === 'w' || mode === 'd') pipeline(wire, local as Writable, done);
  else wire.resume();
}

/**
 * Opens the exports of one value, then starts them: if one cannot open, those opened before it
 * are taken back before anything flowed, and the error is thrown (the value is not sent).
 */
function openExports(plans: ExportPlan[]): void {
  let opened = 0;
  try {
    for (; opened < plans.length; opened++) plans[opened]!.open?.();
  } catch (err) {
    for (let i = 0; i < opened; i++) plans[i]!.undo?.();
    throw fromNodeError(err);
  }
  for (const plan of plans) plan.start?.();
}

/** A value waiting for the streams of its references: woken once every one of them arrived. */
interface PendingWait {
  missing: Set<string>;
  resolve: () => void;
  reject: (err: NetchanError) => void;
  timer: NodeJS.Timeout;
}

/** A reference as a value carries it (docs/PROTOCOL.md §5.1, §6.1). */
export type ParsedReference =
  | { back: string }
  | { back?: undefined; owner: 'c' | 's'; id: string; mode?: BytesMode };

/** Reads a reference's payload, or throws ERR_DECODE. */
function parseReference(kind: ReferenceKind, data: Record<string, unknown>): ParsedReference {
  if (kind === 'channel' && typeof data.b === 'string') return { back: data.b };
  const id = data.id;
  const owner = data.o;
  if (typeof id !== 'string' || id.length === 0 || id.length > 64 || (owner !== 'c' && owner !== 's')) {
    throw netchanError(ErrorCodes.DECODE, 'malformed reference');
  }
  if (kind === 'channel') return { owner, id };
  const mode = data.m;
  if (mode !== 'r' && mode !== 'w' && mode !== 'd') throw netchanError(ErrorCodes.DECODE, 'malformed byte-stream reference mode');
  return { owner, id, mode };
}

/**
 * What encoding one channel or byte stream commits the session to. Nothing of it happens while
 * the value is encoded: only once the whole value is known to be sendable (encoded, within the
 * size limits) are the exports opened, and only once all of them opened do bytes start to flow.
 */
export interface ExportPlan {
  /** The reference the value carries. */
  ref: Record<string, unknown>;
  /** Opens what the reference needs (its stream, its pending entry); nothing flows yet. */
  open?(): void;
  /** Takes `open` back when a later export of the same value could not open. */
  undo?(): void;
  /** Starts the flow (a byte stream's pipeline), once every export of the value opened. */
  start?(): void;
}

/**
 * The transport-independent half of a session. Subclasses open or accept streams; this class
 * turns streams into channel endpoints and values into references and back.
 */
export abstract class SessionCore<S extends WireStream = WireStream> extends EventEmitter implements StreamContext, ReferenceHooks {
  readonly flusher = new Flusher();
  protected readonly codec: Codec;
  protected readonly maxFrameBytes: number;
  protected readonly referenceTimeoutMs: number;
  /** Channel streams where this side owns the channel, by stream id (for back-references). */
  protected readonly exporters = new Map<string, ChannelExporter>();
  /**
   * Remote channel endpoints of this session. Never the program's handles ({@link RemoteChannel}):
   * a handle the program dropped must be collectable, to release its stream.
   */
  protected readonly remotes = new Set<RemoteEndpoint<unknown>>();
  /**
   * Asks for a garbage collection as remote handles pile up, so that the dropped ones are
   * released before the session's channel limit (lib/session/collector.ts). Its limit: the server's
   * `maxChannelsPerSession` (the client learns it from `netchan-max-channels`).
   */
  protected collection = new CollectionTrigger(DEFAULT_MAX_CHANNELS);
  /** Every netchan stream of this session, for teardown. */
  protected readonly streams = new Set<S>();
  /** Values waiting for referenced streams, by the stream id each still misses. */
  private readonly waits = new Map<string, Set<PendingWait>>();
  /** The exports planned by the encode in progress (see {@link ExportPlan}). */
  private plans: ExportPlan[] | null = null;
  /**
   * Most stream ids the session's values may wait for at once; a value that would wait for more
   * fails with ERR_LIMIT. Infinity unless a subclass bounds it.
   */
  protected maxWaitingReferences = Infinity;
  protected ended = false;
  /** Byte streams of this session open now. */
  protected openByteStreams = 0;
  /**
   * Whether channel streams survive a lost connection (both sides agreed, docs/PROTOCOL.md §4.5):
   * they keep what they send until the peer confirms it, and are resumed on the next connection.
   */
  protected resumable = false;
  /** Channel streams by stream id, for resumption. */
  protected readonly framedBySid = new Map<string, FramedStream>();
  /**
   * The largest frame payload the peer accepts, when it said so (a server's
   * `netchan-max-frame-bytes`): a larger value is refused here rather than sent to be reset. @internal
   */
  peerMaxFrameBytes = Infinity;

  constructor(
    readonly id: string,
    readonly counters: Stats,
    options: SessionOptions,
  ) {
    super();
    this.maxFrameBytes = options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
    this.referenceTimeoutMs = options.referenceTimeoutMs ?? 10_000;
    this.codec = new Codec({ maxValueBytes: this.maxFrameBytes, maxDepth: options.maxDepth ?? 64 });
  }

  /**
   * Encodes a value for the peer. Refused (thrown) means nothing happened: the channels and byte
   * streams inside are exported only after the value encoded within both sides' size limits, so
   * a refused value opened no stream and read nothing from a Readable, and can be sent again.
   */
  encode(value: unknown): Uint8Array {
    this.plans = null;
    let bytes: Uint8Array;
    try {
      bytes = this.codec.encode(value, this);
      if (bytes.length > this.peerMaxFrameBytes) {
        throw netchanError(ErrorCodes.VALUE_TOO_LARGE, `encoded value is ${bytes.length} bytes, the peer accepts at most ${this.peerMaxFrameBytes}`);
      }
    } catch (err) {
      this.plans = null;
      throw err;
    }
    const plans = this.plans as ExportPlan[] | null;
    this.plans = null;
    if (plans) openExports(plans);
    return bytes;
  }

  decode(bytes: Uint8Array): unknown {
    return this.codec.decode(bytes, this);
  }

  // ---- ReferenceHooks ----

  encodeReference(kind: ReferenceKind, obj: object): Record<string, unknown> {
    if (this.ended) throw netchanError(ErrorCodes.SESSION_CLOSED, 'session is closed');
    if (kind === 'channel' && obj instanceof RemoteChannel && obj.session === this) return { b: obj.streamId };
    const plan = kind === 'channel' ? this.exportChannel(obj as ExportableChannel) : this.exportBytes(obj, bytesModeOf(obj));
    (this.plans ??= []).push(plan);
    return plan.ref;
  }

  /**
   * Sees every reference of a value before any is taken: throws for one that can never be
   * taken, and, when streams of some have not arrived yet, makes the decode wait for all of
   * them at once (docs/PROTOCOL.md §4.2). So a value is taken whole or not at all.
   */
  checkReferences(refs: readonly FoundReference[]): void {
    let missing: string[] | undefined;
    let named: Set<string> | undefined;
    for (const { kind, data } of refs) {
      const ref = parseReference(kind, data);
      if (ref.back === undefined) {
        named ??= new Set();
        if (named.has(ref.id)) throw netchanError(ErrorCodes.DUPLICATE_REFERENCE, `the value names stream ${ref.id} twice`);
        named.add(ref.id);
      }
      if (!this.referencePresent(kind, ref)) (missing ??= []).push(ref.back ?? ref.id);
    }
    if (missing) this.waitFor(missing);
  }

  decodeReference(kind: ReferenceKind, data: Record<string, unknown>): unknown {
    const ref = parseReference(kind, data);
    if (ref.back !== undefined) {
      const ex = this.exporters.get(ref.back);
      if (!ex) throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `no channel stream ${ref.back} in this session`);
      return ex.channel;
    }
    if (kind === 'channel') return this.importChannel(ref.owner, ref.id);
    return this.importBytes(ref.owner, ref.id, ref.mode as BytesMode);
  }

  /** Plans the export of a local channel (no side effect until the plan's `open`). */
  protected abstract exportChannel(ch: ExportableChannel): ExportPlan;
  /** Plans the export of a local stream object (no side effect until the plan's `open`). */
  protected abstract exportBytes(obj: object, mode: BytesMode): ExportPlan;
  /**
   * Whether what `ref` names is here to be taken now (false: its stream may still arrive).
   * Throws for a reference that can never be taken. No side effect.
   */
  protected abstract referencePresent(kind: ReferenceKind, ref: ParsedReference): boolean;
  /** Takes what a reference names; only called after {@link referencePresent} said it is there. */
  protected abstract importChannel(owner: 'c' | 's', id: string): unknown;
  protected abstract importBytes(owner: 'c' | 's', id: string, mode: BytesMode): unknown;

  // ---- building blocks for subclasses ----

  /** Counts a netchan stream and forgets it when it closes. */
  protected track(wire: S): void {
    this.streams.add(wire);
    this.counters.streams++;
    this.tracked(wire);
    wire.bytes.once('close', () => {
      this.streams.delete(wire);
      this.counters.streams--;
      this.untracked(wire);
    });
  }

  /** For subclasses: a stream of this session opened (it is counted in `streams`). */
  protected tracked(_wire: S): void {}

  /** For subclasses: a stream of this session closed (it is no longer in `streams`). */
  protected untracked(_wire: S): void {}

  /**
   * Takes a byte stream's wire into the session: counted, framed with its end proof (§6.2: the
   * program reads and writes plain bytes, and a stream cut short fails instead of ending), and
   * failing with NetchanErrors. Bytes that arrived before (a server's stream event comes a tick
   * after the stream's first DATA) are decoded when it is called.
   */
  protected trackBytes(wire: WireStream): void {
    const stream = wire.bytes;
    proveByteStream(stream);
    this.counters.byteStreams++;
    this.openByteStreams++;
    stream.once('close', () => {
      this.counters.byteStreams--;
      this.openByteStreams--;
    });
    stream.on('error', (err) => debug('byte stream error: %s', (err as Error).message));
    // The program holds this stream: whatever ends it with an error (a reset by the peer, whose
    // source failed or whose session ended; the connection lost) ends it with a NetchanError,
    // in `stream.errored` and in what for-await or pipeline throw too. Both ends of Node's
    // destroy are mapped, before it records the error: the error destroy is given (a WebSocket
    // mux stream's reset), and the one an HTTP/2 stream's _destroy makes up from the RST code.
    const bytes = stream as Duplex & { destroy(err?: Error, cb?: unknown): Duplex; _destroy(err: Error | null, cb: (err?: Error | null) => void): void };
    const toNetchan = (err: Error | null | undefined) => (err ? fromNodeError(err, ErrorCodes.STREAM_RESET) : err);
    const destroy = bytes.destroy;
    bytes.destroy = function (err?: Error, cb?: unknown) {
      return destroy.call(this, toNetchan(err) ?? undefined, cb);
    };
    // Destroyed before its end without a word (an HTTP/2 stream of a lost connection, a peer's
    // CANCEL that Node takes quietly): the reader would see Node's bare "Premature close".
    const destroyImpl = bytes._destroy;
    bytes._destroy = function (err, cb) {
      destroyImpl.call(this, err, (e) => {
        if (!e && !this.readableEnded) e = netchanError(ErrorCodes.STREAM_RESET, 'byte stream cut off before its end');
        cb(toNetchan(e));
      });
    };
  }

  protected framed(wire: WireStream): FramedStream {
    const placeholder = {
      onFrame() {},
      onStreamEnd() {},
      onStreamError() {},
      onStreamClose() {},
    };
    return new FramedStream(wire, this.flusher, placeholder, this.maxFrameBytes, this.counters);
  }

  /** Makes a channel stream resumable when the session is. */
  private resumeOn(fs: FramedStream, streamId: string): void {
    if (!this.resumable) return;
    fs.enableResume();
    fs.canSuspend = () => !this.ended;
    this.framedBySid.set(streamId, fs);
  }

  protected forgetFramed(streamId: string, fs: FramedStream): void {
    if (this.framedBySid.get(streamId) === fs) this.framedBySid.delete(streamId);
  }

  protected attachExporter(fs: FramedStream, channel: ExportableChannel, streamId: string): ChannelExporter {
    this.resumeOn(fs, streamId);
    const ex = new ChannelExporter(fs, this, channel, streamId, (e) => {
      if (this.exporters.get(e.streamId) === e) this.exporters.delete(e.streamId);
      this.forgetFramed(streamId, fs);
    });
    fs.setSink(ex);
    this.exporters.set(streamId, ex);
    return ex;
  }

  protected attachRemote<T>(fs: FramedStream, streamId: string): RemoteEndpoint<T> {
    this.resumeOn(fs, streamId);
    const rc = new RemoteEndpoint<T>(fs, this, streamId, this, (r) => {
      this.remotes.delete(r as RemoteEndpoint<unknown>);
      this.collection.closed(this.remotes.size);
      this.forgetFramed(streamId, fs);
    });
    fs.setSink(rc);
    this.remotes.add(rc as RemoteEndpoint<unknown>);
    this.collection.opened(this.remotes.size);
    return rc;
  }

  /**
   * Makes a decode wait (then retry) until every one of `keys` is announced, or fail with
   * ERR_UNKNOWN_REFERENCE after the reference timeout.
   */
  protected waitFor(keys: readonly string[]): never {
    let fresh = 0;
    for (const key of keys) if (!this.waits.has(key)) fresh++;
    if (this.waits.size + fresh > this.maxWaitingReferences) {
      throw netchanError(ErrorCodes.LIMIT, `values of this session would wait for more than ${this.maxWaitingReferences} streams at once`);
    }
    const ready = new Promise<void>((resolve, reject) => {
      const wait: PendingWait = { missing: new Set(keys), resolve, reject, timer: undefined as unknown as NodeJS.Timeout };
      wait.timer = setTimeout(() => {
        for (const key of wait.missing) this.unwait(key, wait);
        reject(netchanError(ErrorCodes.UNKNOWN_REFERENCE, `referenced stream${wait.missing.size > 1 ? 's' : ''} ${[...wait.missing].join(', ')} did not arrive within ${this.referenceTimeoutMs} ms`));
      }, this.referenceTimeoutMs);
      wait.timer.unref();
      for (const key of wait.missing) {
        let set = this.waits.get(key);
        if (!set) this.waits.set(key, (set = new Set()));
        set.add(wait);
      }
    });
    throw new PendingReferences(ready);
  }

  private unwait(key: string, wait: PendingWait): void {
    const set = this.waits.get(key);
    if (!set) return;
    set.delete(wait);
    if (set.size === 0) this.waits.delete(key);
  }

  /**
   * The stream `key` arrived: wakes the decodes that waited for it and nothing else. `refused`:
   * it was refused, so they are woken at once, to fail (with the refusal) instead of waiting.
   */
  protected announce(key: string, refused = false): void {
    const set = this.waits.get(key);
    if (!set) return;
    this.waits.delete(key);
    for (const w of set) {
      w.missing.delete(key);
      if (w.missing.size > 0 && !refused) continue;
      for (const other of w.missing) this.unwait(other, w);
      clearTimeout(w.timer);
      w.resolve();
    }
  }

  /**
   * Ends the session's streams and fails every waiting decode. Graceful: every channel stream
   * writes what it has batched (acknowledgements above all: without them the peer would give
   * values this side's program already received to someone else) and ends its side; streams the
   * peer has not ended within `gracefulCloseMs` are then reset. Otherwise everything is reset now.
   */
  protected teardown(error: NetchanError, graceful = false): void {
    if (this.ended) return;
    this.ended = true;
    const waiting = new Set<PendingWait>();
    for (const set of this.waits.values()) for (const w of set) waiting.add(w);
    this.waits.clear();
    for (const w of waiting) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    // streams cut off with a connection, waiting for a resumption that will not come
    for (const fs of [...this.framedBySid.values()]) fs.abandon(error);
    if (graceful) {
      for (const rc of this.remotes) rc.leave(error.code, error.message);
      for (const ex of this.exporters.values()) ex.finish();
      if (this.streams.size > 0) {
        const timer = setTimeout(() => this.resetStreams(), GRACEFUL_CLOSE_MS);
        timer.unref();
      }
      return;
    }
    for (const rc of this.remotes) rc.failOpen(error);
    this.resetStreams();
  }

  private resetStreams(): void {
    for (const wire of this.streams) wire.reset();
  }
}
