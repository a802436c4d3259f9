/**
 * The one error class of netchan. Every failure carries a stable string `code`
 * (listed in docs/errors.md) and, where there was one, the underlying `cause`.
 */

/** Every error code netchan produces. Stable: code may switch on them. */
export const ErrorCodes = {
  /** The channel is closed (send on a closed channel, or receive after close and drain). */
  CHANNEL_CLOSED: 'ERR_CHANNEL_CLOSED',
  /** The operation was aborted through its `AbortSignal`. */
  ABORTED: 'ERR_ABORTED',
  /** An argument is outside what the API accepts. */
  INVALID_ARGUMENT: 'ERR_INVALID_ARGUMENT',
  /** A frame declares a payload larger than the receiver's `maxFrameBytes`. */
  FRAME_TOO_LARGE: 'ERR_FRAME_TOO_LARGE',
  /** The byte stream ended inside a frame. */
  FRAME_TRUNCATED: 'ERR_FRAME_TRUNCATED',
  /** An encoded value is larger than the codec's `maxValueBytes`. */
  VALUE_TOO_LARGE: 'ERR_VALUE_TOO_LARGE',
  /** A value could not be decoded: malformed or hostile MessagePack. */
  DECODE: 'ERR_DECODE',
  /** A value could not be encoded (unsupported type, too large, too deep). */
  ENCODE: 'ERR_ENCODE',
  /** A MessagePack extension type this codec does not accept. */
  UNKNOWN_EXTENSION: 'ERR_UNKNOWN_EXTENSION',
  /** A value nests deeper than the codec's `maxDepth`. */
  DEPTH_LIMIT: 'ERR_DEPTH_LIMIT',
  /** The request's path is not a netchan endpoint (standalone server). */
  NOT_FOUND: 'ERR_NOT_FOUND',
  /** The server exports no channel under that name. */
  UNKNOWN_CHANNEL: 'ERR_UNKNOWN_CHANNEL',
  /** A value named a channel or byte-stream reference this session does not hold. */
  UNKNOWN_REFERENCE: 'ERR_UNKNOWN_REFERENCE',
  /** A value names the same exported stream twice (each is taken once, by one reference). */
  DUPLICATE_REFERENCE: 'ERR_DUPLICATE_REFERENCE',
  /** The peer broke the wire protocol (bad headers, unexpected frame, frame on a closed stream). */
  PROTOCOL: 'ERR_PROTOCOL',
  /** The connection to the peer was lost; in-flight operations may or may not have completed. */
  CONNECTION_LOST: 'ERR_CONNECTION_LOST',
  /** The session is closed (by this side, the peer, or a failed heartbeat). */
  SESSION_CLOSED: 'ERR_SESSION_CLOSED',
  /** The session named by a stream does not exist (or no longer exists) on the server. */
  UNKNOWN_SESSION: 'ERR_UNKNOWN_SESSION',
  /** The peer reset the stream that carried this channel or byte stream. */
  STREAM_RESET: 'ERR_STREAM_RESET',
  /** A byte stream ended without its end proof, or the proof counts other bytes than arrived: it was cut short. */
  STREAM_TRUNCATED: 'ERR_STREAM_TRUNCATED',
  /** The handle was released: it no longer refers to the remote channel. */
  RELEASED: 'ERR_RELEASED',
  /** The request was not authenticated or not allowed. */
  UNAUTHORIZED: 'ERR_UNAUTHORIZED',
  /** A web page of an origin the server's `allowedOrigins` does not allow (HTTP 403). */
  FORBIDDEN_ORIGIN: 'ERR_FORBIDDEN_ORIGIN',
  /** TLS failed: certificate not trusted, wrong host name, or protocol below TLS 1.3. */
  TLS: 'ERR_TLS',
  /** The server certificate does not match the `pin` given to `connect`. */
  PIN_MISMATCH: 'ERR_PIN_MISMATCH',
  /** Could not connect to the server (refused, unreachable, timed out). */
  CONNECT: 'ERR_CONNECT',
  /** No frame from the peer within the idle timeout: the session is considered dead. */
  TIMEOUT: 'ERR_TIMEOUT',
  /**
   * A limit of the server was reached (channels or byte streams per session, sessions per
   * principal, anonymous sessions), or a send would export a channel beyond the server's
   * channels per session.
   */
  LIMIT: 'ERR_LIMIT',
  /** The TCP gateway's policy does not allow this target (or the address its name resolves to). */
  FORBIDDEN_TARGET: 'ERR_FORBIDDEN_TARGET',
  /** The TCP gateway reached the target, which refused the connection. */
  TARGET_REFUSED: 'ERR_TARGET_REFUSED',
  /** The TCP gateway could not reach the target: the name does not resolve, no route, host down. */
  TARGET_UNREACHABLE: 'ERR_TARGET_UNREACHABLE',
  /** The TCP gateway's connection attempt to the target timed out. */
  TARGET_TIMEOUT: 'ERR_TARGET_TIMEOUT',
  /** A value holds a channel or byte stream, which a shared channel (kept in JetStream) cannot carry. */
  NOT_SHAREABLE: 'ERR_NOT_SHAREABLE',
  /** A shared channel's backend (NATS JetStream) failed or refused the channel. */
  BACKEND: 'ERR_BACKEND',
} as const;

/** A stable netchan error code string. */
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes] | (string & {});

/** Extra facts an error may carry. */
export interface NetchanErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /**
   * For a failed `send` across the network: whether the value may have reached the
   * other side (`true`), or certainly did not (`false`). Absent for other operations.
   */
  mayHaveBeenDelivered?: boolean;
  /** For a refusal by the server or a proxy: the HTTP status it answered with. */
  status?: number;
}

/** The error class of netchan: a stable `code`, a message, and an optional `cause`. */
export class NetchanError extends Error {
  /** The stable error code, e.g. `ERR_CHANNEL_CLOSED`. */
  readonly code: ErrorCode;
  /** See {@link NetchanErrorOptions.mayHaveBeenDelivered}. */
  readonly mayHaveBeenDelivered: boolean | undefined;
  /** See {@link NetchanErrorOptions.status}. */
  readonly status: number | undefined;

  constructor(code: ErrorCode, message: string, options: NetchanErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.mayHaveBeenDelivered = options.mayHaveBeenDelivered;
    this.status = options.status;
  }

  override get name(): string {
    return 'NetchanError';
  }
}

/** Makes a {@link NetchanError}; the single place error objects are created. */
export function netchanError(code: ErrorCode, message: string, options?: NetchanErrorOptions): NetchanError {
  return new NetchanError(code, message, options);
}

/** True when `err` is a {@link NetchanError} with the given code. */
export function isNetchanError(err: unknown, code?: ErrorCode): err is NetchanError {
  return err instanceof NetchanError && (code === undefined || err.code === code);
}

/**
 * Maps an error from Node (sockets, TLS, http2) to a NetchanError: the one place where Node's
 * own codes (ECONNRESET, ERR_HTTP2_STREAM_ERROR, ...) are translated.
 */
export function fromNodeError(err: unknown, fallback: ErrorCode = ErrorCodes.CONNECTION_LOST): NetchanError {
  if (err instanceof NetchanError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  switch (code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'ETIMEDOUT':
      return netchanError(ErrorCodes.CONNECT, `cannot connect: ${message}`, { cause: err });
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ERR_HTTP2_GOAWAY_SESSION':
    case 'ERR_HTTP2_SESSION_ERROR':
    case 'ERR_HTTP2_INVALID_SESSION':
    case 'ERR_STREAM_PREMATURE_CLOSE':
      return netchanError(ErrorCodes.CONNECTION_LOST, `connection lost: ${message}`, { cause: err });
    case 'ERR_HTTP2_STREAM_ERROR':
    case 'ERR_HTTP2_STREAM_CANCEL':
      return netchanError(ErrorCodes.STREAM_RESET, `stream reset: ${message}`, { cause: err });
    case 'DEPTH_ZERO_SELF_SIGNED_CERT':
    case 'SELF_SIGNED_CERT_IN_CHAIN':
    case 'UNABLE_TO_VERIFY_LEAF_SIGNATURE':
    case 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY':
    case 'CERT_HAS_EXPIRED':
    case 'ERR_TLS_CERT_ALTNAME_INVALID':
    case 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION':
    case 'ERR_SSL_UNSUPPORTED_PROTOCOL':
    case 'ERR_SSL_NO_PROTOCOLS_AVAILABLE':
    case 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED':
    case 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE':
    case 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA':
      return netchanError(ErrorCodes.TLS, `TLS failed: ${message}`, { cause: err });
    default:
      return netchanError(fallback, message, { cause: err });
  }
}
