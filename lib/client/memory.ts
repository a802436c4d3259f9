/**
 * A client session to a server in the same process, over the in-memory transport
 * (lib/transport/memory.ts): the channels, references, credits and resumption of the network,
 * without sockets or TLS.
 */
import type { ServerWireStream } from '../transport/contract.js';
import { memoryConnection, type MemoryConnection } from '../transport/memory.js';
import type { ConnectOptions, Session } from './client.js';
import { requestHeaders, startSession } from './start.js';

/** What takes the server side of an in-memory connection: a `NetchanServer`. */
export interface MemoryServer {
  /** Handles a stream; a failure fails that stream, never the caller. */
  serveStream(stream: ServerWireStream, info?: { principal?: string }): void;
}

/** Options of {@link connectInMemory}. */
export interface MemoryConnectOptions extends Pick<ConnectOptions, 'headers' | 'token' | 'heartbeatIntervalMs' | 'idleTimeoutMs' | 'reconnect' | 'maxFrameBytes' | 'maxDepth' | 'referenceTimeoutMs'> {
  /** The principal every stream of the session presents, as an app's auth would set it. Default `''` (anonymous). */
  principal?: string;
}

/** A session over the in-memory transport, and a way to cut its connection (it then resumes, as over a network). */
export interface MemorySession {
  session: Session;
  /** Cuts the current connection: the session is resumed on a new one when it is resumable. */
  cut(): void;
}

/**
 * Connects to `server` in the same process and opens a session, as `connect` does over the
 * network. Resolves to the session and a way to cut its connection.
 */
export async function connectInMemory(server: MemoryServer, options: MemoryConnectOptions = {}): Promise<MemorySession> {
  const info = { principal: options.principal ?? '' };
  let current: MemoryConnection = memoryConnection((stream) => server.serveStream(stream, info));
  const reconnector = async (): Promise<MemoryConnection['client']> => {
    current = memoryConnection((stream) => server.serveStream(stream, info));
    return current.client;
  };
  const extra = requestHeaders(options);
  try {
    const session = await startSession(current.client, reconnector, extra, options);
    return { session, cut: () => current.cut() };
  } catch (err) {
    current.client.destroy();
    throw err;
  }
}
