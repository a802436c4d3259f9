/**
 * A client's options and the events of its session.
 */
import type { NetchanError } from '../core/errors.js';
import type { SessionOptions } from '../session/session.js';
import type { ClientWireSession, TransportKind } from '../transport/contract.js';
import type { TransportChoice } from '../transport/connect.js';
import type { ClientTlsOptions } from '../transport/tls.js';

/** Options of {@link connect}. */
export interface ConnectOptions extends ClientTlsOptions, SessionOptions {
  /** Extra request headers sent on every stream (e.g. for the app's own auth). */
  headers?: Record<string, string>;
  /** A bearer token, sent as `authorization: Bearer <token>` on every stream. */
  token?: string;
  /** Heartbeat interval in ms. Default: what the server asks for (15000 unless configured). */
  heartbeatIntervalMs?: number;
  /** The session is considered dead after this long without a frame from the server, in ms. Default 3 × heartbeat. */
  idleTimeoutMs?: number;
  /**
   * `h2`: HTTP/2 only. `ws`: the WebSocket fallback only (one WebSocket carrying every stream,
   * docs/PROTOCOL.md §7). `auto` (default): HTTP/2, falling back to a WebSocket when the server
   * or a proxy on the way speaks only HTTP/1.1 (ALPN without `h2`, or a `426` answer).
   */
  transport?: TransportChoice;
  /**
   * Allows an `http:` URL: plaintext HTTP/2 (h2c) or WebSocket, for loopback, a unix socket
   * (`socketPath`) or behind a TLS-terminating proxy. Default false: `http:` URLs are refused.
   */
  insecure?: boolean;
  /** With `insecure`, connect to this unix socket; the URL then gives only the path. */
  socketPath?: string;
  /**
   * Reconnect and resume the session when the connection drops (docs/PROTOCOL.md §4.5): channel
   * streams continue where they were, nothing lost or duplicated, order kept; byte streams in
   * progress fail. The server decides how long it keeps the session (its lease). Default true.
   */
  reconnect?: boolean;
  /** Ask the server to ping as well (docs/PROTOCOL.md §4.1): the browser client. @internal */
  serverPings?: boolean;
}

/** The events of a {@link Session}, with their listeners. */
export interface SessionEvents {
  /** The connection was lost and a resumption starts. */
  disconnect: (error: NetchanError) => void;
  /** The session was resumed on a new connection. */
  reconnect: () => void;
  /** The session ended, with why. */
  close: (error: NetchanError) => void;
}

/**
 * Opens a new connection to the session's server, for a resumption: what `connect` opened the
 * first one with, asked for `transport`.
 */
export type Reconnector = (transport: TransportKind) => Promise<ClientWireSession>;
