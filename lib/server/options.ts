/**
 * A server's options, limits and timeouts, with their defaults.
 */
import type { HeaderMap } from '../wire/headers.js';
import type { OriginPolicy } from './origin.js';
import { DEFAULT_MAX_CHANNELS, type SessionOptions } from '../session/session.js';

/** Options of {@link createServer}. */
export interface ServerOptions extends SessionOptions {
  /** Server private key (PEM). */
  key?: string | Buffer;
  /** Server certificate chain (PEM). */
  cert?: string | Buffer;
  /** CA certificates trusted for client certificates (mTLS). */
  ca?: string | Buffer | (string | Buffer)[];
  /** Ask clients for a certificate and refuse those without a valid one (mTLS). Default false. */
  requestCert?: boolean;
  /** Path the standalone server serves netchan on. Default '/'. */
  path?: string;
  /** Heartbeat interval the server asks clients to keep, in ms. Default 15000. */
  heartbeatIntervalMs?: number;
  /** A session whose control stream is silent this long is ended, in ms. Default 45000. */
  idleTimeoutMs?: number;
  /** How long a session may leave a reference it was sent unopened, in ms. Default 60000. */
  pendingReferenceTimeoutMs?: number;
  /**
   * Serve plaintext (h2c and WebSocket without TLS): for loopback, a unix socket, or behind a
   * TLS-terminating proxy. Default false: `listen` needs `key` and `cert`.
   */
  insecure?: boolean;
  /**
   * Channel streams one session may have open at once (named, exported, references). Default 4096.
   * Advertised to clients (`netchan-max-channels`), which refuse an export over it with ERR_LIMIT
   * on the send. A remote handle counts until it is closed and drained, released, or dropped by
   * the program and collected.
   */
  maxChannelsPerSession?: number;
  /** Byte streams one session may have open at once. Default 1024. */
  maxByteStreamsPerSession?: number;
  /**
   * Sessions one authenticated principal may have open at once. Default 256. Anonymous sessions
   * (principal `''`) are not counted against it.
   */
  maxSessionsPerPrincipal?: number;
  /**
   * Anonymous sessions (principal `''`) the whole server may have open at once; one more is
   * refused with `429 ERR_LIMIT`. Default 16384.
   */
  maxAnonymousSessions?: number;
  /**
   * Anonymous sessions on one connection that have no stream open besides their control stream;
   * a new anonymous session over it is refused with `429 ERR_LIMIT`. Default 64. Counted by
   * connection but only while unused, so a proxy that multiplexes many users over one upstream
   * connection is not held to it once their sessions open channels.
   */
  maxUnusedAnonymousSessionsPerConnection?: number;
  /**
   * An anonymous session that has no stream open besides its control stream this long is ended
   * (`ERR_TIMEOUT`), in ms. Default 60000; 0 disables. Sessions of an authenticated principal are
   * bounded by `maxSessionsPerPrincipal` instead and never end for this.
   */
  unusedAnonymousSessionTimeoutMs?: number;
  /**
   * A TLS connection that has not completed its handshake this long after it was accepted is
   * closed, in ms. Default 10000; 0 disables. Standalone server (`listen`) only: under Express
   * the app's own server sets it (`handshakeTimeout` of `http2.createSecureServer`).
   */
  handshakeTimeoutMs?: number;
  /**
   * A connection that has not sent its first request this long after it was accepted (after the
   * TLS handshake) is closed, in ms: the HTTP/2 preface (h2c included) and a first stream, or an
   * HTTP/1.1 request such as the WebSocket upgrade. Default 10000; 0 disables. Standalone server
   * only: under Express the app's own server's timeouts apply.
   */
  firstRequestTimeoutMs?: number;
  /**
   * A connection that carries no stream of a live session this long is closed, in ms: one whose
   * first stream was refused, or whose last session ended or timed out. HTTP/2 connections get a
   * GOAWAY, WebSocket ones a close, and either is dropped a second later. Default 30000; 0
   * disables. Under Express it applies to WebSocket connections and to HTTP/2 connections that
   * carried netchan streams only (any stream of the app's own leaves the connection to the app).
   */
  noSessionTimeoutMs?: number;
  /**
   * The server's policy: whether `principal` may use the exported channel `channel` by name.
   * Default: everyone may. A refusal is `403 ERR_UNAUTHORIZED` on that channel only. The
   * principal is what the app's auth established (Express) or `cert:<CN>` of an mTLS client
   * certificate (standalone server), `''` when anonymous.
   */
  authorize?: (request: { principal: string; channel: string }) => boolean;
  /**
   * Authenticates every stream (and WebSocket upgrade) of the standalone server (`listen`), e.g.
   * by a bearer token: returns the principal, or `false`/`undefined` to refuse with
   * `401 ERR_UNAUTHORIZED`. Gets the request headers and the mTLS principal (`cert:<CN>`, or
   * `''`). Default: the mTLS principal, anonymous without one. Under Express the app's own
   * middleware authenticates instead.
   */
  authenticate?: (request: { headers: StreamHeaders; principal: string }) => string | false | undefined;
  /**
   * How long a session whose connection was lost is kept for the client to resume it, in ms
   * (docs/PROTOCOL.md §4.5). Its channel streams keep their state meanwhile; after the lease the
   * session ends and the values its client had not received go back to their channels.
   * Default 10000; 0 disables resumption.
   */
  sessionLeaseMs?: number;
  /**
   * Which web pages may open sessions, by the `Origin` header browsers send (every WebSocket
   * upgrade carries one): `'same-origin'` (default: the page's host and port are the request's
   * own, and over TLS the page is `https`), a list of origins (`'https://app.example.com'`, or RegExps), a function, or `'*'`.
   * Refused: `403 ERR_FORBIDDEN_ORIGIN`. Requests without an `Origin` (programs) are not
   * concerned. It keeps another site's page from using a visitor's cookies to reach the server.
   */
  allowedOrigins?: OriginPolicy;
}

/** Defaults of the limits in {@link ServerOptions}. */
export const DEFAULT_LIMITS = {
  maxChannelsPerSession: DEFAULT_MAX_CHANNELS,
  maxByteStreamsPerSession: 1024,
  maxSessionsPerPrincipal: 256,
  maxAnonymousSessions: 16384,
  maxUnusedAnonymousSessionsPerConnection: 64,
} as const;

/** Defaults of the connection and anonymous-session timeouts in {@link ServerOptions}, in ms. */
export const DEFAULT_TIMEOUTS = {
  handshakeTimeoutMs: 10_000,
  firstRequestTimeoutMs: 10_000,
  noSessionTimeoutMs: 30_000,
  unusedAnonymousSessionTimeoutMs: 60_000,
} as const;

/** The limits in force on a server: its options, or their defaults. */
export type Limits = { -readonly [K in keyof typeof DEFAULT_LIMITS]: number };
/** The timeouts in force on a server: its options, or their defaults. */
export type Timeouts = { -readonly [K in keyof typeof DEFAULT_TIMEOUTS]: number };

/** Request headers of a stream, as HTTP/2 or the WebSocket mux gives them. */
export type StreamHeaders = HeaderMap;

/** Who a stream belongs to, as the app's auth (or mTLS) established it. */
export interface StreamContextInfo {
  /** The authenticated principal; streams of one session must all present the same one. */
  principal?: string;
}
