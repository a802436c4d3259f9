/**
 * Opening a client session: the connection (any transport of lib/transport/), the session
 * stream and its answer, then the {@link Session} on it.
 */
import { debug } from '../core/debug.js';
import { publish } from '../core/diagnostics.js';
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { Headers, header, serverHeartbeat } from '../wire/headers.js';
import type { ClientWireSession } from '../transport/contract.js';
import { openTransport } from '../transport/connect.js';
import { Session } from './client.js';
import type { ConnectOptions, Reconnector } from './options.js';
import { sessionRequest } from './session-request.js';

/**
 * Connects to a netchan server and opens a session.
 * @param url `https://host:port/path` (the path the server or the Express mount serves);
 *   `http://` only with `insecure: true`.
 */
export async function connect(url: string | URL, options: ConnectOptions = {}): Promise<Session> {
  const u = new URL(url);
  if (u.protocol === 'http:' && !options.insecure) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'an http: URL is plaintext: pass insecure: true to allow it (loopback, unix socket, or behind a TLS-terminating proxy)');
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw netchanError(ErrorCodes.INVALID_ARGUMENT, `connect needs an https: URL, got ${u.protocol}`);
  const choice = options.transport ?? 'auto';
  if (choice !== 'auto' && choice !== 'h2' && choice !== 'ws') throw netchanError(ErrorCodes.INVALID_ARGUMENT, `transport must be auto, h2 or ws, got ${String(choice)}`);
  if (options.socketPath && !options.insecure) throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'socketPath needs insecure: true');
  const extra = requestHeaders(options);
  const reconnector: Reconnector = (kind) => openTransport(u, choice === 'auto' && kind !== 'memory' ? kind : choice, { ...options, headers: extra });
  const wire = await openTransport(u, choice, { ...options, headers: extra });
  try {
    return await startSession(wire, reconnector, extra, options);
  } catch (err) {
    wire.destroy();
    // an HTTP/2 hop that reaches a server only over HTTP/1.1 answers 426: try a WebSocket
    if (choice === 'auto' && wire.kind === 'h2' && err instanceof NetchanError && err.status === 426) {
      debug('HTTP/2 refused with 426, falling back to WebSocket');
      const ws = await openTransport(u, 'ws', { ...options, headers: extra });
      try {
        return await startSession(ws, reconnector, extra, options);
      } catch (err2) {
        ws.destroy();
        throw err2;
      }
    }
    throw err;
  }
}

/** The headers every stream of a session carries for the app's auth: `headers`, and `token` as a bearer. */
export function requestHeaders(options: Pick<ConnectOptions, 'headers' | 'token'>): Record<string, string> {
  const extra: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.token) extra.authorization = `Bearer ${options.token}`;
  return extra;
}

/**
 * Opens a session on a connection: the session stream, its answer, then the {@link Session}.
 * `reconnector` opens the connections of its resumptions. @internal
 */
export async function startSession(wire: ClientWireSession, reconnector: Reconnector, extra: Record<string, string>, options: ConnectOptions): Promise<Session> {
  const resume: Record<string, string> = options.reconnect !== false ? { [Headers.resumable]: '1' } : {};
  const { control, headers } = await sessionRequest(wire, extra, resume);
  const id = header(headers, Headers.session);
  if (!id || !/^[0-9a-f]{32}$/.test(id)) throw netchanError(ErrorCodes.PROTOCOL, 'server sent no valid session id');
  const heartbeat = options.heartbeatIntervalMs ?? serverHeartbeat(header(headers, Headers.heartbeatMs));
  const lease = Number(header(headers, Headers.leaseMs));
  const session = new Session(id, wire, reconnector, extra, options, Number.isSafeInteger(lease) && lease > 0 ? lease : 0);
  const serverMax = Number(header(headers, Headers.maxFrameBytes));
  if (Number.isSafeInteger(serverMax) && serverMax >= 0) session.peerMaxFrameBytes = serverMax;
  const maxChannels = Number(header(headers, Headers.maxChannels));
  if (Number.isSafeInteger(maxChannels) && maxChannels > 0) session.limitChannels(maxChannels);
  control.bytes.on('error', (err) => debug('control stream error: %s', err.message));
  session.attachControl(control, heartbeat, options.idleTimeoutMs ?? heartbeat * 3);
  publish('sessionOpen', () => ({ side: 'client', sessionId: id, principal: undefined, transport: wire.kind, resumable: session.leaseMs > 0 && options.reconnect !== false }));
  return session;
}
