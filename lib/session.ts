/**
 * What client and server sessions share: the codec with this session's reference hooks, the
 * write flusher, the tables of channel streams, and the rules for channels and byte streams
 * inside values (docs/PROTOCOL.md §4–§6). Knows streams and frames, not Express.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Duplex, Readable, Stream, Writable, pipeline } from 'node:stream';
import { debuglog } from 'node:util';
import { Channel } from './channel.js';
import { ChannelExporter, RemoteChannel, type ExportableChannel } from './channel-stream.js';
import { Codec, registerReferenceClass, type ReferenceHooks, type ReferenceKind } from './codec.js';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from './errors.js';
import { Flusher, FramedStream } from './framed-stream.js';
import { PendingReferences, type Stats, type StreamContext } from './stream-context.js';
import { guardDestroy, resetStream } from './stream-reset.js';

export const debug = debuglog('netchan');

registerReferenceClass(Channel, 'channel');
registerReferenceClass(RemoteChannel, 'channel');
registerReferenceClass(Stream, 'bytes');
if (typeof ReadableStream === 'function') registerReferenceClass(ReadableStream, 'bytes');

/** Header names of the wire protocol (docs/PROTOCOL.md §4). */
export const Headers = {
  version: 'netchan-version',
  kind: 'netchan-kind',
  session: 'netchan-session',
  stream: 'netchan-stream',
  name: 'netchan-name',
  ref: 'netchan-ref',
  exportRef: 'netchan-export',
  mode: 'netchan-mode',
  capacity: 'netchan-capacity',
  credit: 'netchan-credit',
  error: 'netchan-error',
  message: 'netchan-message',
  maxFrameBytes: 'netchan-max-frame-bytes',
  heartbeatMs: 'netchan-heartbeat-ms',
  resumable: 'netchan-resumable',
  leaseMs: 'netchan-lease-ms',
  framesReceived: 'netchan-frames-received',
} as const;

export const PROTOCOL_VERSION = '1';

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

export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

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

interface PendingWait {
  resolve: () => void;
  reject: (err: NetchanError) => void;
  timer: NodeJS.Timeout;
}

/**
 * The transport-independent half of a session. Subclasses open or accept streams; this class
 * turns streams into channel endpoints and values into references and back.
 */
export abstract class SessionCore extends EventEmitter implements StreamContext, ReferenceHooks {
  readonly flusher = new Flusher();
  protected readonly codec: Codec;
  protected readonly maxFrameBytes: number;
  protected readonly referenceTimeoutMs: number;
  /** Channel streams where this side owns the channel, by stream id (for back-references). */
  protected readonly exporters = new Map<string, ChannelExporter>();
  /** Remote channel handles of this session. */
  protected readonly remotes = new Set<RemoteChannel<unknown>>();
  /** Every netchan stream of this session, for teardown. */
  protected readonly streams = new Set<Duplex>();
  private readonly waits = new Map<string, PendingWait[]>();
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

  encode(value: unknown): Uint8Array {
    const bytes = this.codec.encode(value, this);
    if (bytes.length > this.peerMaxFrameBytes) {
      throw netchanError(ErrorCodes.VALUE_TOO_LARGE, `encoded value is ${bytes.length} bytes, the peer accepts at most ${this.peerMaxFrameBytes}`);
    }
    return bytes;
  }

  decode(bytes: Uint8Array): unknown {
    return this.codec.decode(bytes, this);
  }

  // ---- ReferenceHooks ----

  encodeReference(kind: ReferenceKind, obj: object): Record<string, unknown> {
    if (this.ended) throw netchanError(ErrorCodes.SESSION_CLOSED, 'session is closed');
    if (kind === 'channel') {
      if (obj instanceof RemoteChannel && obj.session === this) return { b: obj.streamId };
      return this.exportChannel(obj as ExportableChannel);
    }
    return this.exportBytes(obj, bytesModeOf(obj));
  }

  decodeReference(kind: ReferenceKind, data: Record<string, unknown>): unknown {
    if (kind === 'channel' && typeof data.b === 'string') {
      const ex = this.exporters.get(data.b);
      if (!ex) throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `no channel stream ${data.b} in this session`);
      return ex.channel;
    }
    const id = data.id;
    const owner = data.o;
    if (typeof id !== 'string' || id.length === 0 || id.length > 64 || (owner !== 'c' && owner !== 's')) {
      throw netchanError(ErrorCodes.DECODE, 'malformed reference');
    }
    if (kind === 'channel') return this.importChannel(owner, id);
    const mode = data.m;
    if (mode !== 'r' && mode !== 'w' && mode !== 'd') throw netchanError(ErrorCodes.DECODE, 'malformed byte-stream reference mode');
    return this.importBytes(owner, id, mode);
  }

  protected abstract exportChannel(ch: ExportableChannel): Record<string, unknown>;
  protected abstract exportBytes(obj: object, mode: BytesMode): Record<string, unknown>;
  protected abstract importChannel(owner: 'c' | 's', id: string): unknown;
  protected abstract importBytes(owner: 'c' | 's', id: string, mode: BytesMode): unknown;

  // ---- building blocks for subclasses ----

  /** Counts a netchan stream and forgets it when it closes. */
  protected track(stream: Duplex): void {
    guardDestroy(stream);
    this.streams.add(stream);
    this.counters.streams++;
    stream.once('close', () => {
      this.streams.delete(stream);
      this.counters.streams--;
    });
  }

  protected trackBytes(stream: Duplex): void {
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
    const wire = stream as Duplex & { destroy(err?: Error, cb?: unknown): Duplex; _destroy(err: Error | null, cb: (err?: Error | null) => void): void };
    const toNetchan = (err: Error | null | undefined) => (err ? fromNodeError(err, ErrorCodes.STREAM_RESET) : err);
    const destroy = wire.destroy;
    wire.destroy = function (err?: Error, cb?: unknown) {
      return destroy.call(this, toNetchan(err) ?? undefined, cb);
    };
    // Destroyed before its end without a word (an HTTP/2 stream of a lost connection, a peer's
    // CANCEL that Node takes quietly): the reader would see Node's bare "Premature close".
    const destroyImpl = wire._destroy;
    wire._destroy = function (err, cb) {
      destroyImpl.call(this, err, (e) => {
        if (!e && !this.readableEnded) e = netchanError(ErrorCodes.STREAM_RESET, 'byte stream cut off before its end');
        cb(toNetchan(e));
      });
    };
  }

  protected framed(stream: Duplex): FramedStream {
    const placeholder = {
      onFrame() {},
      onStreamEnd() {},
      onStreamError() {},
      onStreamClose() {},
    };
    return new FramedStream(stream, this.flusher, placeholder, this.maxFrameBytes, this.counters);
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

  protected attachRemote<T>(fs: FramedStream, streamId: string): RemoteChannel<T> {
    this.resumeOn(fs, streamId);
    const rc = new RemoteChannel<T>(fs, this, streamId, this, (r) => {
      this.remotes.delete(r as RemoteChannel<unknown>);
      this.forgetFramed(streamId, fs);
    });
    fs.setSink(rc);
    this.remotes.add(rc as RemoteChannel<unknown>);
    return rc;
  }

  /** Makes a decode wait (then retry) until `key` is announced, or fail after the timeout. */
  protected waitFor(key: string): never {
    let list = this.waits.get(key);
    if (!list) this.waits.set(key, (list = []));
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const l = this.waits.get(key);
        if (l) {
          const i = l.indexOf(entry);
          if (i >= 0) l.splice(i, 1);
          if (l.length === 0) this.waits.delete(key);
        }
        reject(netchanError(ErrorCodes.UNKNOWN_REFERENCE, `referenced stream ${key} did not arrive within ${this.referenceTimeoutMs} ms`));
      }, this.referenceTimeoutMs);
      timer.unref();
      const entry: PendingWait = { resolve, reject, timer };
      list.push(entry);
    });
    throw new PendingReferences(ready);
  }

  /** Wakes the decodes waiting for `key`. */
  protected announce(key: string): void {
    const list = this.waits.get(key);
    if (!list) return;
    this.waits.delete(key);
    for (const w of list) {
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
    for (const [, list] of this.waits) {
      for (const w of list) {
        clearTimeout(w.timer);
        w.reject(error);
      }
    }
    this.waits.clear();
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
    for (const stream of this.streams) resetStream(stream);
  }
}
