/**
 * What client and server sessions share: the codec with this session's reference hooks, the
 * write flusher, the tables of channel streams, and the rules for channels and byte streams
 * inside values (docs/PROTOCOL.md §4–§6). Knows streams and frames, not Express.
 */
import { EventEmitter } from 'node:events';
import { Stream } from 'node:stream';
import { proveByteStream } from '../wire/byte-frames.js';
import { Channel } from '../core/channel.js';
import { ChannelExporter, RemoteChannel, RemoteEndpoint, type ExportableChannel } from './channel-stream.js';
import { CollectionTrigger } from './collector.js';
import { OwnerPair, RemotePair } from './pair-stream.js';
import { Codec, registerReferenceClass, type FoundReference, type ReferenceHooks, type ReferenceKind } from '../wire/codec.js';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import { FramedStream } from './framed-stream.js';
import { processFlusher, type Flusher } from './flusher.js';
import { PendingReferences, type Stats, type StreamContext } from './stream-context.js';
import type { WireStream } from '../transport/contract.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../wire/frames.js';
import { publish, type Side } from '../core/diagnostics.js';
import { bytesModeOf, takeBytes, type BytesMode } from './byte-streams.js';
import { ReferenceWaits, openExports, parseReference, type ExportPlan, type ParsedReference } from './references.js';

export { joinBytes, type BytesMode } from './byte-streams.js';
export type { ExportPlan, ParsedReference } from './references.js';

registerReferenceClass(Channel, 'channel');
registerReferenceClass(RemoteChannel, 'channel');
registerReferenceClass(Stream, 'bytes');
if (typeof ReadableStream === 'function') registerReferenceClass(ReadableStream, 'bytes');
if (typeof WritableStream === 'function') registerReferenceClass(WritableStream, 'bytes');

/** Limits and timings shared by client and server sessions. */
export interface SessionOptions {
  /** Largest frame payload accepted, in bytes. Default 1048576 (1 MiB). */
  maxFrameBytes?: number;
  /** Deepest nesting of a value accepted. Default 64. */
  maxDepth?: number;
  /** How long a value may wait for the streams of the references it names. Default 10000 ms. */
  referenceTimeoutMs?: number;
  /** Binary values decode as plain Uint8Arrays (the browser client). @internal */
  plainBinary?: boolean;
}

/** The server's default `maxChannelsPerSession`. */
export const DEFAULT_MAX_CHANNELS = 4096;

export function newSessionId(): string {
  // Web Crypto: the same in Node and in a browser
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let hex = '';
  for (const b of bytes) hex += b.toString(16).padStart(2, '0');
  return hex;
}

/** How long a graceful close waits for the peer to end its side of each stream. */
const GRACEFUL_CLOSE_MS = 2000;

/**
 * The transport-independent half of a session. Subclasses open or accept streams; this class
 * turns streams into channel endpoints and values into references and back.
 */
export abstract class SessionCore<S extends WireStream = WireStream> extends EventEmitter implements StreamContext, ReferenceHooks {
  /** Which end of the session this is, for observers. */
  protected abstract readonly side: Side;
  /** The process's flusher (lib/session/flusher.ts): shared by every session. */
  get flusher(): Flusher {
    return processFlusher;
  }
  protected readonly codec: Codec;
  protected readonly maxFrameBytes: number;
  protected readonly referenceTimeoutMs: number;
  /** Channel streams where this side owns the channel (or a pair of them), by stream id (for back-references). */
  protected readonly exporters = new Map<string, ChannelExporter | OwnerPair>();
  /**
   * Remote channel endpoints of this session. Never the program's handles ({@link RemoteChannel}):
   * a handle the program dropped must be collectable, to release its stream.
   */
  protected readonly remotes = new Set<RemoteEndpoint<unknown> | RemotePair>();
  /**
   * Asks for a garbage collection as remote handles pile up, so that the dropped ones are
   * released before the session's channel limit (lib/session/collector.ts). Its limit: the server's
   * `maxChannelsPerSession` (the client learns it from `netchan-max-channels`).
   */
  protected collection = new CollectionTrigger(DEFAULT_MAX_CHANNELS);
  /** Every netchan stream of this session, for teardown. */
  protected readonly streams = new Set<S>();
  /** Values waiting for referenced streams. */
  private readonly waits: ReferenceWaits;
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
    this.codec = new Codec({ maxValueBytes: this.maxFrameBytes, maxDepth: options.maxDepth ?? 64, plainBinary: options.plainBinary === true });
    this.waits = new ReferenceWaits(this.referenceTimeoutMs, () => this.maxWaitingReferences);
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
    // A pair stream's send handle is exported anew: a back-reference to the stream names its receive channel.
    if (kind === 'channel' && obj instanceof RemoteChannel && obj.session === this && obj.direction !== 'send') return { b: obj.streamId };
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
    // `on`, not `once`: a stream closes once, and `once` costs a wrapper and its state per stream
    wire.bytes.on('close', () => {
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
  protected trackBytes(wire: WireStream, streamId: string): void {
    const stream = wire.bytes;
    proveByteStream(stream);
    this.counters.byteStreams++;
    this.openByteStreams++;
    publish('streamOpen', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'bytes' }));
    stream.once('close', () => {
      this.counters.byteStreams--;
      this.openByteStreams--;
      publish('streamClose', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'bytes' }));
    });
    takeBytes(stream);
  }

  /** The stream `streamId` failed for an error in what it carried: observers hear of it. */
  violated(error: NetchanError, streamId: string): void {
    publish('protocolError', () => ({ side: this.side, sessionId: this.id, streamId, code: error.code, message: error.message }));
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
    fs.enableResume(() => !this.ended);
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
      publish('streamClose', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'owner' }));
    });
    fs.setSink(ex);
    this.exporters.set(streamId, ex);
    publish('streamOpen', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'owner' }));
    return ex;
  }

  /** The owner's side of a pair stream (docs/PROTOCOL.md §5.5): one stream id, one place in the channel limit. */
  protected attachPair(fs: FramedStream, receive: ExportableChannel, send: ExportableChannel, streamId: string): OwnerPair {
    this.resumeOn(fs, streamId);
    const pair = new OwnerPair(fs, this, receive, send, streamId, (p) => {
      if (this.exporters.get(p.streamId) === p) this.exporters.delete(p.streamId);
      this.forgetFramed(streamId, fs);
      publish('streamClose', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'owner' }));
    });
    fs.setSink(pair);
    this.exporters.set(streamId, pair);
    publish('streamOpen', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'owner' }));
    return pair;
  }

  /** The remote side of a pair stream (docs/PROTOCOL.md §5.5). */
  protected attachRemotePair<R, S>(fs: FramedStream, streamId: string): RemotePair<R, S> {
    this.resumeOn(fs, streamId);
    const pair = new RemotePair<R, S>(fs, this, streamId, this, (p) => {
      this.remotes.delete(p as RemotePair);
      this.collection.closed(this.remotes.size);
      this.forgetFramed(streamId, fs);
      publish('streamClose', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'remote' }));
    });
    fs.setSink(pair);
    this.remotes.add(pair as RemotePair);
    this.collection.opened(this.remotes.size);
    publish('streamOpen', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'remote' }));
    return pair;
  }

  protected attachRemote<T>(fs: FramedStream, streamId: string): RemoteEndpoint<T> {
    this.resumeOn(fs, streamId);
    const rc = new RemoteEndpoint<T>(fs, this, streamId, this, (r) => {
      this.remotes.delete(r as RemoteEndpoint<unknown>);
      this.collection.closed(this.remotes.size);
      this.forgetFramed(streamId, fs);
      publish('streamClose', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'remote' }));
    });
    fs.setSink(rc);
    this.remotes.add(rc as RemoteEndpoint<unknown>);
    this.collection.opened(this.remotes.size);
    publish('streamOpen', () => ({ side: this.side, sessionId: this.id, streamId, kind: 'channel', role: 'remote' }));
    return rc;
  }

  /**
   * Makes a decode wait (then retry) until every one of `keys` is announced, or fail with
   * ERR_UNKNOWN_REFERENCE after the reference timeout.
   */
  protected waitFor(keys: readonly string[]): never {
    throw new PendingReferences(this.waits.waitFor(keys));
  }

  /**
   * The stream `key` arrived: wakes the decodes that waited for it and nothing else. `refused`:
   * it was refused, so they are woken at once, to fail (with the refusal) instead of waiting.
   */
  protected announce(key: string, refused = false): void {
    this.waits.announce(key, refused);
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
    this.waits.failAll(error);
    // streams cut off with a connection, waiting for a resumption that will not come
    for (const fs of [...this.framedBySid.values()]) fs.abandon(error);
    if (graceful) {
      for (const rc of this.remotes) rc.leave(error.code, error.message);
      for (const ex of this.exporters.values()) ex.finish();
      if (this.streams.size > 0) {
        const timer = setTimeout(() => this.resetStreams(), GRACEFUL_CLOSE_MS);
        timer.unref?.(); // a browser's timers have none
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
