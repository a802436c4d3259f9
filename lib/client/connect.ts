/**
 * Opening a client session: the connection (any transport of lib/transport/), the session
 * stream and its answer, then the {@link Session} on it.
 */
import { debug } from '../core/debug.js';
import { ErrorCodes, NetchanError, netchanError } from '../core/errors.js';
import { openTransport } from '../transport/connect.js';
import type { Session } from './client.js';
import type { ConnectOptions, Reconnector } from './options.js';
import { requestHeaders, startSession } from './start.js';

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

