/**
 * One stream of the WebSocket mux (docs/PROTOCOL.md §7.2, §7.3): a Duplex of its own bytes with
 * a send and a receive window, half-close and reset, and a wire stream of the transport contract
 * on either side. What it sends goes through its mux (lib/transport/ws-mux.ts).
 */
import { Duplex } from 'node:stream';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import type { HeaderMap } from '../wire/headers.js';
import { MUX_INITIAL_WINDOW, MUX_MAX_DATA, MuxType, RESET_NAMES, ResetCode, encodeHeaders, u32, type MuxFrame } from '../wire/mux-frames.js';
import { cutOffError, type ClientWireStream, type ResetReason, type ServerWireStream, type WirePeer, type WireResponse } from './contract.js';

/** What a stream needs of its mux. */
export interface MuxLink {
  readonly role: 'client' | 'server';
  /** The connection is closing or gone. */
  readonly closed: boolean;
  readonly destroyed: boolean;
  readonly peer: WirePeer;
  /** The WebSocket holds more than it should: streams wait for {@link waitDrain}. */
  readonly congested: boolean;
  send(type: number, stream: number, payload?: Uint8Array): void;
  /** Calls the stream's `onDrain` once the WebSocket drained. */
  waitDrain(stream: MuxStream): void;
  /** The stream is complete or reset. */
  forget(stream: MuxStream): void;
}

/** The error of a stream reset by the peer. */
function resetError(code: number): NetchanError {
  return netchanError(ErrorCodes.STREAM_RESET, `stream reset: Stream closed with error code ${RESET_NAMES[code] ?? code}`);
}

/** The mux RESET code of each reset reason (the HTTP/2 codes, §7.2). */
const RESET_CODES: Readonly<Record<ResetReason, number>> = {
  cancel: ResetCode.CANCEL,
  done: ResetCode.NO_ERROR,
  refused: ResetCode.REFUSED_STREAM,
  protocol: ResetCode.PROTOCOL_ERROR,
  internal: ResetCode.INTERNAL_ERROR,
};

interface PendingWrite {
  chunk: Buffer;
  offset: number;
  callback: (err?: Error | null) => void;
}

/**
 * One stream of a {@link WsMux}: a Duplex of its own bytes, and a wire stream of the contract on
 * either side (the client's opened stream, the server's accepted one).
 */
export class MuxStream extends Duplex implements ClientWireStream, ServerWireStream {
  /** The error code this stream was reset with, once it was (sent or received). */
  private rstCode: number | undefined = undefined;
  private headersSent = false;
  private response: WireResponse | undefined = undefined;
  private responseListener: ((response: WireResponse) => void) | undefined = undefined;
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
    private readonly mux: MuxLink,
    /** The request headers (on the server: what the client opened the stream with, until routed). */
    public headers: HeaderMap = {},
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

  // ---- the transport contract ----

  get bytes(): Duplex {
    return this;
  }

  get cutOff(): boolean {
    return Boolean(this.rstCode);
  }

  endedBy(): NetchanError {
    return cutOffError(this.mux.closed || this.mux.destroyed);
  }

  reset(reason: ResetReason = 'cancel'): void {
    if (!this.destroyed) this.close(RESET_CODES[reason]);
  }

  fail(error: Error): void {
    if (!this.destroyed) this.destroy(error);
  }

  get peer(): WirePeer {
    return this.mux.peer;
  }

  routed(): void {
    this.headers = {};
  }

  get responded(): boolean {
    return this.headersSent;
  }

  get gone(): boolean {
    return this.destroyed;
  }

  onResponse(fn: (response: WireResponse) => void): void {
    if (this.response) fn(this.response);
    else this.responseListener = fn;
  }

  /** Sends the response headers (server side). `endStream` ends this side at once. */
  respond(status: number, headers: Readonly<Record<string, string>> = {}, options: { endStream?: boolean } = {}): void {
    if (this.headersSent || this.destroyed) return;
    this.headersSent = true;
    this.mux.send(MuxType.HEADERS, this.id, encodeHeaders({ ':status': status, ...headers }));
    if (options.endStream) this.end();
  }

  /**
   * Resets the stream with `code`: at once, unless the writable side was already ended and the
   * code is NO_ERROR, in which case the reset follows the END once the written data went out. A
   * writable side that was not ended is never ended here: the reader must see a cut-off stream
   * as a reset, not as a clean (truncated) end.
   */
  private close(code: number): void {
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
          const headers = frame.headers ?? {};
          this.response = { status: Number(headers[':status']), headers };
          const listener = this.responseListener;
          this.responseListener = undefined;
          listener?.(this.response);
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
    this.destroy(cut ? netchanError(ErrorCodes.CONNECTION_LOST, 'connection lost: the WebSocket closed') : undefined);
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
    this.destroy(netchanError(ErrorCodes.STREAM_RESET, `stream reset: WebSocket mux: ${message}`));
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
