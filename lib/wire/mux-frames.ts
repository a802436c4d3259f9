/**
 * The frames of the WebSocket fallback (docs/PROTOCOL.md §7): a session's streams multiplexed
 * over one WebSocket, each message one mux frame. A pure codec (`encodeMuxFrame` /
 * `decodeMuxFrame`), tested with the hex vectors printed in the protocol document; the streams
 * themselves are lib/transport/ws-mux.ts.
 */
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';

/** The WebSocket subprotocol a netchan mux speaks. */
export const WS_SUBPROTOCOL = 'netchan.v1';

/**
 * A browser cannot set headers on a WebSocket upgrade, and a token in the URL ends up in logs:
 * it offers its bearer token as a second subprotocol, this prefix and the token's UTF-8 in
 * base64url (§7.1). The server never picks it.
 */
export const WS_BEARER_PREFIX = 'netchan.bearer.';

/**
 * What an HTTP header value can hold (Node's parser takes no more): a token with anything else
 * (CR LF, other control characters, a character beyond latin1) would be a header no request can
 * have, for the app to trip on, forward or log.
 */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/** The subprotocol that carries `token`; throws ERR_INVALID_ARGUMENT for one no header can hold. */
export function bearerSubprotocol(token: string): string {
  if (!HEADER_VALUE.test(token)) throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'a token holds only what an HTTP header value can (no control characters, nothing beyond latin1)');
  let binary = '';
  for (const b of new TextEncoder().encode(token)) binary += String.fromCharCode(b);
  return WS_BEARER_PREFIX + btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * The bearer token of a `Sec-WebSocket-Protocol` header's offer, if it has one; undefined for
 * none, one that is not base64url of UTF-8, or one that no header value can hold.
 */
export function bearerOfSubprotocols(offered: readonly string[]): string | undefined {
  const found = offered.find((p) => p.startsWith(WS_BEARER_PREFIX));
  if (found === undefined) return undefined;
  const b64 = found.slice(WS_BEARER_PREFIX.length);
  if (b64 === '' || !/^[A-Za-z0-9_-]+$/.test(b64)) return undefined;
  try {
    const binary = atob(b64.replace(/-/g, '+').replace(/_/g, '/'));
    const token = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
    return HEADER_VALUE.test(token) ? token : undefined;
  } catch {
    return undefined;
  }
}

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

/** Names of the codes, as RFC 9113 and Node's http2 name them (`NGHTTP2_CANCEL`). */
export const RESET_NAMES: Record<number, string> = Object.fromEntries(Object.entries(ResetCode).map(([name, code]) => [code, `NGHTTP2_${name}`]));

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

export function protocolError(message: string): NetchanError {
  return netchanError(ErrorCodes.PROTOCOL, `WebSocket mux: ${message}`);
}

const EMPTY = Buffer.alloc(0);
