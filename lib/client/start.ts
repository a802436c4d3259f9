/**
 * Starting a client session on a connection that is already open (any adapter): the session
 * stream, its answer, then the {@link Session}. Node's `connect`, the in-memory transport and the
 * browser's `connect` share it.
 */
import { debug } from '../core/debug.js';
import { publish } from '../core/diagnostics.js';
import { ErrorCodes, netchanError } from '../core/errors.js';
import { Headers, header, serverHeartbeat } from '../wire/headers.js';
import type { ClientWireSession } from '../transport/contract.js';
import { Session } from './client.js';
import type { ConnectOptions, Reconnector } from './options.js';
import { sessionRequest, sessionStreamHeaders } from './session-request.js';

/** The headers every stream of a session carries for the app's auth: `headers`, and `token` as a bearer. */
export function requestHeaders(options: Pick<ConnectOptions, 'headers' | 'token'>): Record<string, string> {
  const extra: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.token) extra.authorization = `Bearer ${options.token}`;
  return extra;
}

/** The session class a client makes: {@link Session}, or the browser's. @internal */
export type SessionClass<S extends Session> = new (...args: ConstructorParameters<typeof Session>) => S;

/**
 * Opens a session on a connection: the session stream, its answer, then the {@link Session}.
 * `reconnector` opens the connections of its resumptions. @internal
 */
export async function startSession<S extends Session = Session>(
  wire: ClientWireSession,
  reconnector: Reconnector,
  extra: Record<string, string>,
  options: ConnectOptions,
  kind: SessionClass<S> = Session as unknown as SessionClass<S>,
): Promise<S> {
  const resume: Record<string, string> = { ...(options.reconnect !== false ? { [Headers.resumable]: '1' } : {}), ...sessionStreamHeaders(options) };
  const { control, headers } = await sessionRequest(wire, extra, resume);
  const id = header(headers, Headers.session);
  if (!id || !/^[0-9a-f]{32}$/.test(id)) throw netchanError(ErrorCodes.PROTOCOL, 'server sent no valid session id');
  const heartbeat = options.heartbeatIntervalMs ?? serverHeartbeat(header(headers, Headers.heartbeatMs));
  const lease = Number(header(headers, Headers.leaseMs));
  const session = new kind(id, wire, reconnector, extra, options, Number.isSafeInteger(lease) && lease > 0 ? lease : 0);
  const serverMax = Number(header(headers, Headers.maxFrameBytes));
  if (Number.isSafeInteger(serverMax) && serverMax >= 0) session.peerMaxFrameBytes = serverMax;
  const maxChannels = Number(header(headers, Headers.maxChannels));
  if (Number.isSafeInteger(maxChannels) && maxChannels > 0) session.limitChannels(maxChannels);
  control.bytes.on('error', (err) => debug('control stream error: %s', err.message));
  session.attachControl(control, heartbeat, options.idleTimeoutMs ?? heartbeat * 3);
  publish('sessionOpen', () => ({ side: 'client', sessionId: id, principal: undefined, transport: wire.kind, resumable: session.leaseMs > 0 && options.reconnect !== false }));
  return session;
}
