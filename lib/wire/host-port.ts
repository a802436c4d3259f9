/**
 * The `host:port` of a gateway target (docs/PROTOCOL.md §8), as the client names it in
 * `netchan-target` and the server parses it.
 */
import net from 'node:net';
import { ErrorCodes, netchanError } from '../core/errors.js';

/** A `host:port` split: `host` without brackets (an IPv6 literal is bare). */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `host:port` or `[v6]:port`. `port` must be 1–65535 (0 too with `allowPortZero`, for a
 * local listener). Throws ERR_INVALID_ARGUMENT.
 */
export function parseHostPort(text: string, allowPortZero = false): HostPort {
  const m = typeof text === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(text) : null;
  const host = m ? (m[1] ?? m[2])! : '';
  const port = m ? Number(m[3]) : NaN;
  if (!m || host.length > 253 || port > 65535 || (port === 0 && !allowPortZero) || (m[1] !== undefined && net.isIPv6(host) === false)) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, `expected host:port (or [ipv6]:port), got ${JSON.stringify(text)}`);
  }
  return { host, port };
}

/** `host:port`, with brackets around an IPv6 literal. */
export function formatHostPort(host: string, port: number): string {
  return `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** The eight 16-bit groups of a valid IPv6 address, however it is spelled (`::`, leading zeros, a dotted tail). */
