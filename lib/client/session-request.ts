/**
 * The session stream (docs/PROTOCOL.md §4.1): what opens a session, or resumes one on a new
 * connection, and the server's answer to it.
 */
import { ErrorCodes, fromNodeError, netchanError } from '../core/errors.js';
import { Headers, PROTOCOL_VERSION, refusal, type HeaderMap } from '../wire/headers.js';
import type { ClientWireSession, ClientWireStream, WireResponse } from '../transport/contract.js';
import type { ConnectOptions } from './options.js';

/** Sends a session stream (new, or resuming `extra`'s session) and waits for its answer. */
export async function sessionRequest(wire: ClientWireSession, auth: Record<string, string>, extra: Record<string, string>): Promise<{ control: ClientWireStream; headers: HeaderMap }> {
  const control = wire.open({
    ...auth,
    [Headers.version]: PROTOCOL_VERSION,
    [Headers.kind]: 'session',
    ...extra,
  });
  const bytes = control.bytes;
  let onError: (err: Error) => void = () => undefined;
  let onClose: () => void = () => undefined;
  const response = await new Promise<WireResponse>((resolve, reject) => {
    onError = (err) => reject(fromNodeError(err));
    onClose = () => reject(netchanError(ErrorCodes.CONNECT, 'server closed the session stream before answering'));
    control.onResponse(resolve);
    bytes.once('error', onError);
    bytes.once('close', onClose);
    wire.onClose(reject);
  }).finally(() => {
    bytes.off('error', onError);
    bytes.off('close', onClose);
  });
  if (response.status !== 200) throw refusal(response.status, response.headers);
  return { control, headers: response.headers };
}

/** What a client's session streams (the first and each resumption's) carry besides auth and ids. @internal */
export function sessionStreamHeaders(options: Pick<ConnectOptions, 'serverPings'>): Record<string, string> {
  return options.serverPings ? { [Headers.serverPing]: '1' } : {};
}
