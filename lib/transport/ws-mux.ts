/**
 * The WebSocket fallback transport (docs/PROTOCOL.md §7): the streams of a session multiplexed
 * over one WebSocket, for paths where only HTTP/1.1 gets through. Each mux stream behaves like
 * the subset of an HTTP/2 stream the session layer uses — request headers, a response, data with
 * per-stream flow control, half-close, reset — so sessions, channels and byte streams run over
 * it unchanged.
 *
 * The mux-frame codec is pure (`encodeMuxFrame` / `decodeMuxFrame`), tested with the hex vectors
 * printed in the protocol document.
 */
import { EventEmitter } from 'node:events';
import { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';

/** The WebSocket subprotocol a netchan mux speaks. */
export const WS_SUBPROTOCOL = 'netchan.v1';

/** Mux frame types (§7.2). */
export const MuxType = {
  HEADERS: 0x01,
  DATA: 0x02,
  END: 0x03,
  RESET: 0x04,
  WINDOW: 0x05,
} as const;

/** HTTP/2 error codes carried by RESET (RFC 9113 §7), as Node's http2 constants name them. */
export const ResetCode = {
  NO_ERROR: 0x0,
  PROTOCOL_ERROR: 0x1,
  INTERNAL_ERROR: 0x2,
  FLOW_CONTROL_ERROR: 0x3,
  REFUSED_STREAM: 0x7,
  CANCEL: 0x8,
} as const;

/** Names of the codes, as Node's http2 reports them (`NGHTTP2_CANCEL`). */
const RESET_NAMES: Record<number, string> = Object.fromEntries(Object.entries(ResetCode).map(([name, code]) => [code, `NGHTTP2_${name}`]));

/** Bytes a stream may send before the receiver grants more (§7.3). */
export const MUX_INITIAL_WINDOW = 1024 * 1024;
/**
 * Largest DATA payload a sender puts in one message: 64 KiB and the 5-byte `BYTES` header of a
 * byte stream (§6.2), so that a 64 KiB write goes out as one message, not as 64 KiB and 5 bytes.
 */
export const MUX_MAX_DATA = 64 * 1024 + 5;
/** Largest HEADERS payload accepted. */
export const MUX_MAX_HEADERS = 16 * 1024;
/** Largest WebSocket message accepted: a 5-byte mux header plus the largest payload. */
export const MUX_MAX_MESSAGE = 5 + MUX_MAX_DATA;
/** Streams open at once on one WebSocket; HEADERS beyond it are refused (RESET REFUSED_STREAM). */
export const MUX_MAX_STREAMS = 10_000;
/** WebSocket close code for a mux protocol violation (RFC 6455 §7.4.1). */
export const WS_CLOSE_PROTOCOL = 1002;

/** One decoded mux frame. */
export interface MuxFrame {
  type: number;
  stream: number;
  payload: Buffer;
}

/** Encodes one mux frame: `type u8 | stream u32 BE | payload`. */
export function encodeMuxFrame(type: number, stream: number, payload: Uint8Array = EMPTY): Buffer {
  const out = Buffer.allocUnsafe(5 + payload.length);
  out[0] = type;
  out.writeUInt32BE(stream, 1);
  out.set(payload, 5);
  return out;
}

/** Encodes a u32 payload (RESET code, WINDOW increment). */
export function u32(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

/** Encodes a header block: a JSON object of lowercase names to string values, UTF-8. */
export function encodeHeaders(headers: Record<string, string | number>): Buffer {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) out[k.toLowerCase()] = String(v);
  return Buffer.from(JSON.stringify(out), 'utf8');
}

/**
 * Decodes one WebSocket message into a mux frame, or throws `ERR_PROTOCOL`: shorter than 5
 * bytes, stream 0, an unknown type, a RESET or WINDOW payload that is not 4 bytes, an END with
 * a payload, an empty DATA, a HEADERS block too large or not a flat JSON object of strings.
 */
export function decodeMuxFrame(message: Buffer): MuxFrame & { headers?: Record<string, string> } {
  if (message.length < 5) throw protocolError(`mux frame of ${message.length} bytes, shorter than its 5-byte header`);
  const type = message[0];
  const stream = message.readUInt32BE(1);
  const payload = message.subarray(5);
  if (stream === 0) throw protocolError('mux frame on stream 0');
  switch (type) {
    case MuxType.HEADERS: {
      if (payload.length > MUX_MAX_HEADERS) throw protocolError(`header block of ${payload.length} bytes, limit ${MUX_MAX_HEADERS}`);
      return { type, stream, payload, headers: parseHeaders(payload) };
    }
    case MuxType.DATA:
      if (payload.length === 0) throw protocolError('empty DATA frame');
      return { type, stream, payload };
    case MuxType.END:
      if (payload.length !== 0) throw protocolError('END frame with a payload');
      return { type, stream, payload };
    case MuxType.RESET:
    case MuxType.WINDOW:
      if (payload.length !== 4) throw protocolError(`${type === MuxType.RESET ? 'RESET' : 'WINDOW'} payload must be 4 bytes, got ${payload.length}`);
      if (type === MuxType.WINDOW && payload.readUInt32BE(0) === 0) throw protocolError('WINDOW increment of 0');
      return { type, stream, payload };
    default:
      throw protocolError(`unknown mux frame type 0x${type.toString(16).padStart(2, '0')}`);
  }
}

function parseHeaders(payload: Buffer): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(payload.toString('utf8'));
  } catch {
    throw protocolError('header block is not JSON');
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw protocolError('header block is not a JSON object');
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, v] of Object.entries(parsed as Record<string, unknown>)) {
    if (typeof v !== 'string' || k !== k.toLowerCase() || k === '__proto__') throw protocolError(`bad header ${JSON.stringify(k)}`);
    out[k] = v;
  }
  return out;
}

function protocolError(message: string): NetchanError {
  return netchanError(ErrorCodes.PROTOCOL, `WebSocket mux: ${message}`);
}

const EMPTY = Buffer.alloc(0);

/** Node's error for a stream reset by the peer, as `fromNodeError` knows it. */
function resetError(code: number): Error {
  return Object.assign(new Error(`Stream closed with error code ${RESET_NAMES[code] ?? code}`), { code: 'ERR_HTTP2_STREAM_ERROR' });
}

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (err?: Error | null) => void;
}

/**
 * One stream of a {@link WsMux}: a Duplex with the parts of `Http2Stream` the session layer uses
 * (`respond`, `headersSent`, a `'response'` event, `close(code)`, `rstCode`, `session`).
 */
export class MuxStream extends Duplex {
  /** The HTTP/2 error code this stream was reset with, once it was. */
  rstCode: number | undefined = undefined;
  headersSent = false;
  private sendWindow = MUX_INITIAL_WINDOW;
  private receiveWindow = MUX_INITIAL_WINDOW;
  /** Bytes handed to the reader and not yet granted back to the sender. */
  private consumed = 0;
  private pending: PendingWrite | null = null;
  private endReceived = false;
  private endSent = false;
  /** The peer reset after ending its side: drop our writes, end once the reader saw the end. */
  private peerGone = false;
  private removed = false;

  /** @internal */
  constructor(
    readonly id: number,
    private readonly mux: WsMux,
  ) {
    // As with HTTP/2 streams, the stream decides when it is done, not its readable side: a
    // consumer's `for await` ending must leave the writable side usable.
    super({ allowHalfOpen: true, autoDestroy: false, highWaterMark: 64 * 1024 });
    const maybeDestroy = (): void => {
      if (this.endSent && this.endReceived && this.readableEnded && this.writableFinished && !this.destroyed) this.destroy();
    };
    this.on('end', maybeDestroy);
    this.on('finish', maybeDestroy);
  }

  /** The mux, which (like an HTTP/2 session) says whether the connection is closed or destroyed. */
  get session(): WsMux {
    return this.mux;
  }

  /** Sends the response headers (server side). `endStream` ends this side at once. */
  respond(headers: Record<string, string | number>, options: { endStream?: boolean } = {}): void {
    if (this.headersSent || this.destroyed) return;
    this.headersSent = true;
    this.mux.send(MuxType.HEADERS, this.id, encodeHeaders(headers));
    if (options.endStream) this.end();
  }

  /**
   * Resets the stream, as `Http2Stream.close(code)` does: at once, unless the writable side was
   * already ended and the code is NO_ERROR, in which case the reset follows the END once the
   * written data went out. A writable side that was not ended is never ended here: the reader
   * must see a cut-off stream as a reset, not as a clean (truncated) end.
   */
  close(code: number = ResetCode.NO_ERROR): void {
    if (this.destroyed) return;
    if (code === ResetCode.NO_ERROR && this.writableEnded && !this.writableFinished) {
      this.once('finish', () => this.close(code));
      return;
    }
    this.sendReset(code);
    this.destroy();
  }

  // ---- from the mux ----

  /** @internal */
  onFrame(frame: MuxFrame & { headers?: Record<string, string> }): void {
    switch (frame.type) {
      case MuxType.HEADERS:
        if (this.mux.role === 'client' && !this.headersSent) {
          this.headersSent = true;
          this.emit('response', { ...frame.headers, ':status': Number(frame.headers?.[':status']) });
        } else {
          this.resetWith(ResetCode.PROTOCOL_ERROR, 'second HEADERS frame on a stream');
        }
        return;
      case MuxType.DATA: {
        if (this.endReceived || this.peerGone) return this.resetWith(ResetCode.PROTOCOL_ERROR, 'DATA after END');
        if (frame.payload.length > this.receiveWindow) return this.resetWith(ResetCode.FLOW_CONTROL_ERROR, 'DATA beyond the window');
        this.receiveWindow -= frame.payload.length;
        // the payload is a view into the message, which ws does not reuse
        this.pushCounted(frame.payload);
        return;
      }
      case MuxType.END:
        if (this.endReceived) return this.resetWith(ResetCode.PROTOCOL_ERROR, 'second END');
        this.endReceived = true;
        this.push(null);
        this.maybeDone();
        return;
      case MuxType.RESET: {
        const code = frame.payload.readUInt32BE(0);
        this.failPending();
        if (this.endReceived) {
          // the peer's side ended cleanly before it let go: let the reader see that end
          this.peerGone = true;
          if (this.readableEnded) this.destroy();
          else this.once('end', () => this.destroy());
          return;
        }
        this.rstCode = code;
        this.sendResetDone = true;
        // as an HTTP/2 stream: a reset before END, with any code but NO_ERROR, is an error
        this.destroy(code === ResetCode.NO_ERROR ? undefined : resetError(code));
        return;
      }
      case MuxType.WINDOW:
        this.sendWindow += frame.payload.readUInt32BE(0);
        if (this.sendWindow > 2 ** 31 - 1) return this.resetWith(ResetCode.FLOW_CONTROL_ERROR, 'window above 2^31-1');
        this.pump();
        return;
    }
  }

  /** @internal the connection went away */
  onMuxGone(): void {
    this.failPending();
    this.sendResetDone = true;
    if (this.destroyed) return;
    // cut off before both ends: an error for whoever listens for one (as an HTTP/2 stream of a
    // lost connection), so that a reader never takes the cut for an end
    const cut = !(this.endReceived && this.endSent) && this.listenerCount('error') > 0;
    this.destroy(cut ? Object.assign(new Error('the WebSocket closed'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }) : undefined);
  }

  /** @internal the WebSocket can take more */
  onDrain(): void {
    this.pump();
  }

  // ---- Duplex ----

  override _read(): void {
    // data is pushed as it arrives; the sender is held back by the window, not by pausing
  }

  override read(size?: number): unknown {
    const before = this.readableLength;
    const chunk = super.read(size) as unknown;
    this.account(before - this.readableLength);
    return chunk;
  }

  private pushCounted(chunk: Buffer): void {
    const before = this.readableLength;
    this.push(chunk);
    // in flowing mode with an empty buffer, push hands the chunk straight to 'data' listeners
    this.account(chunk.length - (this.readableLength - before));
  }

  /** Grants the sender more window once a quarter of it was read. */
  private account(bytes: number): void {
    if (bytes <= 0) return;
    this.consumed += bytes;
    if (this.consumed >= MUX_INITIAL_WINDOW / 4 && !this.endReceived && !this.destroyed) {
      this.receiveWindow += this.consumed;
      this.mux.send(MuxType.WINDOW, this.id, u32(this.consumed));
      this.consumed = 0;
    }
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.peerGone) return callback();
    this.pending = { chunk, offset: 0, callback };
    this.pump();
  }

  override _final(callback: (err?: Error | null) => void): void {
    if (!this.endSent && !this.peerGone && !this.sendResetDone) {
      this.endSent = true;
      this.mux.send(MuxType.END, this.id);
    }
    callback();
    this.maybeDone();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.failPending();
    if (!(this.endSent && this.endReceived)) this.sendReset(err ? ResetCode.INTERNAL_ERROR : ResetCode.CANCEL);
    this.remove();
    callback(err);
  }

  private sendResetDone = false;

  private sendReset(code: number): void {
    if (this.sendResetDone || this.peerGone) return;
    this.sendResetDone = true;
    if (this.rstCode === undefined) this.rstCode = code;
    this.mux.send(MuxType.RESET, this.id, u32(code));
  }

  private resetWith(code: number, message: string): void {
    this.sendReset(code);
    this.destroy(Object.assign(new Error(`WebSocket mux: ${message}`), { code: 'ERR_HTTP2_STREAM_ERROR' }));
  }

  private pump(): void {
    const p = this.pending;
    if (!p) return;
    while (p.offset < p.chunk.length) {
      if (this.sendWindow <= 0 || this.mux.congested) {
        if (this.mux.congested) this.mux.waitDrain(this);
        return;
      }
      const n = Math.min(p.chunk.length - p.offset, this.sendWindow, MUX_MAX_DATA);
      this.mux.send(MuxType.DATA, this.id, p.chunk.subarray(p.offset, p.offset + n));
      this.sendWindow -= n;
      p.offset += n;
    }
    this.pending = null;
    p.callback();
  }

  private failPending(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    // what was not sent is lost with the stream; the stream's own error (if any) says so
    p.callback();
  }

  /** Both sides ended: the stream is complete. */
  private maybeDone(): void {
    if (this.endSent && this.endReceived) this.remove();
  }

  private remove(): void {
    if (this.removed) return;
    this.removed = true;
    this.mux.forget(this);
  }
}

/** The WebSocket under a mux: the few things of `ws` it uses. */
type Socket = Pick<WebSocket, 'send' | 'close' | 'terminate' | 'on' | 'once' | 'bufferedAmount' | 'readyState'> & {
  _socket?: { remoteAddress?: string; remotePort?: number; cork?(): void; uncork?(): void; on?(event: 'drain', fn: () => void): void; once?(event: 'drain', fn: () => void): void };
};

/** Above this many bytes buffered in the WebSocket, streams wait for it to drain. */
const CONGESTED_BYTES = 4 * 1024 * 1024;

/**
 * Streams multiplexed over one WebSocket. On the client it opens streams (`request`); on the
 * server it emits `'stream'` (stream, headers) for each stream the client opens. Emits `'close'`
 * once the WebSocket is gone and `'error'` on a protocol violation by the peer.
 */
export class WsMux extends EventEmitter {
  /** True once `close()` was called: no new streams. */
  closed = false;
  /** True once the WebSocket is gone. */
  destroyed = false;
  private readonly streams = new Map<number, MuxStream>();
  private lastStreamId = 0;
  private drainWaiters = new Set<MuxStream>();
  private corked = false;
  private closeCallbacks: (() => void)[] = [];

  constructor(
    private readonly ws: Socket,
    readonly role: 'client' | 'server',
  ) {
    super();
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on('close', () => this.gone());
    ws.on('error', (err: Error) => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
    });
    ws._socket?.on?.('drain', () => this.drained());
  }

  /** The TCP (or TLS) socket under the WebSocket, as `Http2Session.socket`: its addresses. */
  get socket(): { remoteAddress?: string; remotePort?: number } | undefined {
    return this.ws._socket;
  }

  /** Streams open on this WebSocket. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Opens a stream with these request headers (client side). */
  request(headers: Record<string, string | number>): MuxStream {
    if (this.role !== 'client') throw new Error('only the client opens mux streams');
    if (this.closed || this.destroyed) throw netchanError(ErrorCodes.SESSION_CLOSED, 'WebSocket mux is closed');
    const id = ++this.lastStreamId;
    const stream = new MuxStream(id, this);
    this.streams.set(id, stream);
    this.send(MuxType.HEADERS, id, encodeHeaders(headers));
    return stream;
  }

  /** Opens no more streams; closes the WebSocket once every stream is done, then calls `callback`. */
  close(callback?: () => void): void {
    if (callback) {
      if (this.destroyed) queueMicrotask(callback);
      else this.closeCallbacks.push(callback);
    }
    this.closed = true;
    if (this.streams.size === 0 && !this.destroyed) this.ws.close(1000, 'done');
  }

  /** Drops the WebSocket at once; every stream fails. */
  destroy(): void {
    if (this.destroyed) return;
    this.ws.terminate();
    this.gone();
  }

  /** @internal */
  get congested(): boolean {
    return this.ws.bufferedAmount > CONGESTED_BYTES;
  }

  /** @internal */
  waitDrain(stream: MuxStream): void {
    this.drainWaiters.add(stream);
  }

  /** @internal */
  send(type: number, stream: number, payload?: Uint8Array): void {
    if (this.destroyed || this.ws.readyState !== 1 /* OPEN */) return;
    // the frames of one turn go out in as few TLS records as possible
    const socket = this.ws._socket;
    if (!this.corked && socket?.cork && socket.uncork) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork!();
      });
    }
    this.ws.send(encodeMuxFrame(type, stream, payload), { binary: true });
  }

  /** @internal a stream is complete or reset */
  forget(stream: MuxStream): void {
    if (this.streams.get(stream.id) !== stream) return;
    this.streams.delete(stream.id);
    this.drainWaiters.delete(stream);
    if (this.closed && this.streams.size === 0 && !this.destroyed) this.ws.close(1000, 'done');
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.destroyed) return;
    let frame: ReturnType<typeof decodeMuxFrame>;
    try {
      if (!isBinary) throw protocolError('text message');
      frame = decodeMuxFrame(data);
    } catch (err) {
      return this.violation(err as NetchanError);
    }
    const stream = this.streams.get(frame.stream);
    if (stream) return stream.onFrame(frame);
    if (frame.type === MuxType.HEADERS && this.role === 'server') {
      if (frame.stream <= this.lastStreamId) return this.violation(protocolError(`stream ${frame.stream} opened out of order`));
      this.lastStreamId = frame.stream;
      if (this.closed || this.streams.size >= MUX_MAX_STREAMS) {
        this.send(MuxType.RESET, frame.stream, u32(ResetCode.REFUSED_STREAM));
        return;
      }
      const s = new MuxStream(frame.stream, this);
      this.streams.set(frame.stream, s);
      this.emit('stream', s, frame.headers);
      return;
    }
    // a frame for a stream already gone (a reset crossing it on the wire), or one never opened
    if (frame.stream > this.lastStreamId) this.violation(protocolError(`frame for stream ${frame.stream}, never opened`));
  }

  private violation(err: NetchanError): void {
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.ws.close(WS_CLOSE_PROTOCOL, err.message.slice(0, 120));
    // a peer that does not answer the close handshake is dropped
    setTimeout(() => this.destroy(), 1000).unref();
  }

  private drained(): void {
    if (this.congested) return;
    const waiters = [...this.drainWaiters];
    this.drainWaiters.clear();
    for (const s of waiters) s.onDrain();
  }

  private gone(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.closed = true;
    for (const s of [...this.streams.values()]) s.onMuxGone();
    this.streams.clear();
    this.drainWaiters.clear();
    const callbacks = this.closeCallbacks;
    this.closeCallbacks = [];
    for (const cb of callbacks) cb();
    this.emit('close');
  }
}
