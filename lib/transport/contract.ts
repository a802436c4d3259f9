/**
 * The transport contract: what a session needs of whatever carries its streams. A wire session
 * opens streams (client) or hands over the streams its peer opened (server), and closes; a wire
 * stream is a byte duplex with request headers, one response, a reset with a netchan-level
 * reason, and, when it goes away without a clean end, the error that says why (reset, or the
 * connection lost).
 *
 * Adapters: HTTP/2 (lib/transport/http2.ts, client and server), the WebSocket mux
 * (lib/transport/ws-mux.ts, both sides) and in memory (lib/transport/memory.ts). The layers above
 * never ask which one they run on, and only this folder imports `node:http2` or `ws`.
 */
import type { Duplex } from 'node:stream';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import type { HeaderMap } from '../wire/headers.js';
import type { ServerConnection } from './connections.js';

/** Which adapter carries a session. */
export type TransportKind = 'h2' | 'ws' | 'memory';

/**
 * Why a stream is reset. `cancel`: this side lets go (the peer may read it as a release);
 * `done`: an answered stream is let go without error once its answer is out; `refused`: never
 * processed; `protocol`: the peer broke a rule; `internal`: this side failed.
 */
export type ResetReason = 'cancel' | 'done' | 'refused' | 'protocol' | 'internal';

/** The part of a stream both sides have. */
export interface WireStream {
  /**
   * The stream's bytes in both directions: frames (or a byte stream's data) are written to and
   * read from it, its `end()` is a half-close. Destroying it from anywhere is safe.
   */
  readonly bytes: Duplex;
  /**
   * Whether the readable side of {@link bytes} ended because the stream was reset or its
   * connection lost, not because the peer ended its side. Asked at its `'end'`.
   */
  readonly cutOff: boolean;
  /**
   * Why the stream went away without a clean end: ERR_CONNECTION_LOST when its connection is
   * closing or gone, else the reset (ERR_STREAM_RESET, ERR_PROTOCOL, …, mapped from the wire's
   * code). Asked when {@link cutOff}, or at a `'close'` before the readable side ended.
   */
  endedBy(): NetchanError;
  /**
   * Resets the stream (RST_STREAM, a mux RESET) with `reason` (default `cancel`). Safe to call
   * from anywhere, also from inside the transport's own events. A stream already gone is left
   * alone.
   */
  reset(reason?: ResetReason): void;
  /**
   * Fails the stream with `error`: the local side of {@link bytes} is destroyed with it and the
   * peer sees a reset with `internal`. Safe from anywhere, as {@link reset}.
   */
  fail(error: Error): void;
}

/** The response to a stream a client opened. */
export interface WireResponse {
  status: number;
  headers: HeaderMap;
}

/** A stream this side opened. */
export interface ClientWireStream extends WireStream {
  /**
   * Calls `fn` with the response once it arrives; never if the stream fails first. One listener
   * per stream, registered before the response can arrive (right after `open`).
   */
  onResponse(fn: (response: WireResponse) => void): void;
}

/** What a server knows of the connection a stream arrived on. */
export interface WirePeer {
  /** The adapter that carries it. */
  readonly transport: TransportKind;
  /** The remote IP address, when the transport has one. */
  readonly remoteAddress: string | undefined;
  /** The principal of a verified TLS client certificate (`cert:<CN>`), or `''`. */
  readonly certificatePrincipal: string;
  /** The server's watch over the connection (its timeouts), when it has one. */
  readonly connection: ServerConnection | undefined;
}

/** A stream the peer opened. */
export interface ServerWireStream extends WireStream {
  /** The request headers, until {@link routed}. */
  readonly headers: HeaderMap;
  /**
   * The server has routed the stream and read what it needs of its headers: the adapter lets go
   * of them (a stream may live for months, and its headers are a few hundred bytes).
   */
  routed(): void;
  /** The connection it came on. */
  readonly peer: WirePeer;
  /** True once {@link respond} answered it. */
  readonly responded: boolean;
  /** Answers the stream; `endStream` ends this side with the answer. Once only. */
  respond(status: number, headers?: Readonly<Record<string, string>>, options?: { endStream?: boolean }): void;
  /** True once the stream is closed or reset: nothing can be written to it. */
  readonly gone: boolean;
}

/** A client's connection: opens streams. */
export interface ClientWireSession {
  readonly kind: TransportKind;
  /** Opens a stream with these request headers (the adapter adds what its wire needs, e.g. `:method`). */
  open(headers: Readonly<Record<string, string>>): ClientWireStream;
  /** Calls `fn` once, when the connection is gone (lost, or closed by either side). */
  onClose(fn: (error: NetchanError) => void): void;
  /** No new streams; resolves once the open ones are done and the connection is closed. */
  close(): Promise<void>;
  /** Drops the connection and every stream on it. Safe from anywhere. */
  destroy(): void;
}

/**
 * {@link WireStream.endedBy} for any adapter: the connection lost when it is closing or gone,
 * else a reset of the stream alone.
 */
export function cutOffError(connectionGone: boolean): NetchanError {
  if (connectionGone) return netchanError(ErrorCodes.CONNECTION_LOST, 'connection lost before the stream ended');
  return netchanError(ErrorCodes.STREAM_RESET, 'stream reset: stream closed before it ended');
}

/** What a connection's `'error'` and `'close'` events can be subscribed on: an HTTP/2 session, a mux. */
interface ClosingEmitter {
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
}

/**
 * {@link ClientWireSession.onClose} for a connection that reports its end as events: `fn` once,
 * with the first error (as a NetchanError), or ERR_CONNECTION_LOST at its close.
 */
export function onConnectionClose(connection: ClosingEmitter, fn: (error: NetchanError) => void): void {
  let done = false;
  const once = (error: NetchanError): void => {
    if (done) return;
    done = true;
    fn(error);
  };
  connection.on('error', (err) => once(fromNodeError(err)));
  connection.on('close', () => once(netchanError(ErrorCodes.CONNECTION_LOST, 'connection closed')));
}
