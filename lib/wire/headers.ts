/**
 * The protocol's vocabulary: header names, the version, how a refusal is written and read, and
 * the heartbeat a server may ask for (docs/PROTOCOL.md §4, §8). Every layer spells them from here.
 */
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';

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
  /** A pair stream's second channel, the one the client sends into (§5.5). */
  sendName: 'netchan-send-name',
  /** The capacity of a pair stream's send channel (§5.5). */
  sendCapacity: 'netchan-send-capacity',
  error: 'netchan-error',
  message: 'netchan-message',
  maxFrameBytes: 'netchan-max-frame-bytes',
  maxChannels: 'netchan-max-channels',
  heartbeatMs: 'netchan-heartbeat-ms',
  /** A session stream's request: the server pings too (a page whose timers a browser throttles). */
  serverPing: 'netchan-server-ping',
  resumable: 'netchan-resumable',
  leaseMs: 'netchan-lease-ms',
  framesReceived: 'netchan-frames-received',
  /** The target of a `tcp` stream (§8). */
  target: 'netchan-target',
} as const;

export const PROTOCOL_VERSION = '1';

/** Headers as a transport hands them over: a name may repeat (an array) or be absent. */
export type HeaderMap = Readonly<Record<string, string | string[] | undefined>>;

/** The first value of header `name`, as a string. */
export function header(headers: HeaderMap, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The headers of a refusal (§4.4): the error code and a message on one line. */
export function refusalHeaders(code: string, message: string): Record<string, string> {
  return { [Headers.error]: code, [Headers.message]: oneLine(message), 'content-type': 'text/plain' };
}

/** The body of a refusal: the same code and message, for people reading it with curl. */
export function refusalBody(code: string, message: string): string {
  return `${code}: ${oneLine(message)}\n`;
}

/** A whole HTTP/1.1 refusal, for a connection that is answered and closed before any upgrade. */
export function http1Refusal(status: number, reason: string, code: string, message: string): string {
  return `HTTP/1.1 ${status} ${reason}\r\nconnection: close\r\ncontent-type: text/plain\r\n${Headers.error}: ${code}\r\n${Headers.message}: ${oneLine(message)}\r\n\r\n${refusalBody(code, message)}`;
}

/**
 * The error a non-200 answer stands for: its `netchan-error` code, else ERR_UNAUTHORIZED for 401
 * and 403 (the app's own auth answered) and `otherwise` for the rest.
 */
export function refusal(status: number, headers: HeaderMap, otherwise: string = ErrorCodes.PROTOCOL): NetchanError {
  const code = header(headers, Headers.error) ?? (status === 401 || status === 403 ? ErrorCodes.UNAUTHORIZED : otherwise);
  const message = header(headers, Headers.message) ?? `server answered ${status}`;
  return netchanError(code, message, { status });
}

function oneLine(message: string): string {
  return message.replace(/[\r\n]+/g, ' ');
}

/** Heartbeats the client accepts from a server's `netchan-heartbeat-ms`, in ms (§4.1). */
export const HEARTBEAT_RANGE_MS = { min: 10, max: 3_600_000, default: 15_000 } as const;

/**
 * The heartbeat interval a server asks for, kept within {@link HEARTBEAT_RANGE_MS}: a server
 * (or whatever answers in its name) cannot make the client ping every millisecond, or never.
 */
export function serverHeartbeat(value: string | undefined): number {
  const ms = Number(value);
  if (value === undefined || !Number.isSafeInteger(ms) || ms <= 0) return HEARTBEAT_RANGE_MS.default;
  return Math.min(HEARTBEAT_RANGE_MS.max, Math.max(HEARTBEAT_RANGE_MS.min, ms));
}
