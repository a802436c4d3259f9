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
  /** A value could not be decoded: malformed or hostile MessagePack. */
  DECODE: 'ERR_DECODE',
  /** A value could not be encoded (unsupported type, too large, too deep). */
  ENCODE: 'ERR_ENCODE',
  /** A MessagePack extension type this codec does not accept. */
  UNKNOWN_EXTENSION: 'ERR_UNKNOWN_EXTENSION',
  /** A value nests deeper than the codec's `maxDepth`. */
  DEPTH_LIMIT: 'ERR_DEPTH_LIMIT',
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
}

/** The error class of netchan: a stable `code`, a message, and an optional `cause`. */
export class NetchanError extends Error {
  /** The stable error code, e.g. `ERR_CHANNEL_CLOSED`. */
  readonly code: ErrorCode;
  /** See {@link NetchanErrorOptions.mayHaveBeenDelivered}. */
  readonly mayHaveBeenDelivered: boolean | undefined;

  constructor(code: ErrorCode, message: string, options: NetchanErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.mayHaveBeenDelivered = options.mayHaveBeenDelivered;
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
