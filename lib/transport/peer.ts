/** What a server knows of the connection a stream arrived on, read once from its socket. */
import type { TransportKind, WirePeer } from './contract.js';
import { ServerConnection } from './connections.js';
import { certificatePrincipal } from './tls.js';

/** The peer of the connection `socket` carries (the socket under an HTTP/2 session or a WebSocket). */
export function peerOfSocket(transport: TransportKind, socket: unknown): WirePeer {
  const address = (socket as { remoteAddress?: string } | undefined)?.remoteAddress;
  return { transport, remoteAddress: address, certificatePrincipal: certificatePrincipal(socket), connection: ServerConnection.of(socket) };
}
