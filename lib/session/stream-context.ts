/**
 * What a channel stream needs from its session: value encoding with the session's reference
 * hooks, counters, and the frame size limit. Kept apart so that channel streams never import
 * the session (no circular imports).
 */
import type { NetchanError } from '../core/errors.js';

/** Counters an operator or a test can read through `stats()`. */
export interface Stats {
  /** Sessions open (server) or 1/0 (client). */
  sessions: number;
  /** HTTP/2 streams open that carry netchan traffic (control, channel and byte streams). */
  streams: number;
  /** Channels open on channel streams (exported local channels plus remote channel handles; a pair stream carries two). */
  channels: number;
  /** Byte streams open. */
  byteStreams: number;
  /** Values received from the peer. */
  valuesIn: number;
  /** Values sent to the peer. */
  valuesOut: number;
  /** Bytes read from netchan streams (frames and byte streams). */
  bytesIn: number;
  /** Bytes written to netchan streams. */
  bytesOut: number;
  /** References exported and not yet picked up by the peer. */
  pendingReferences: number;
  /** TCP connections through the gateway open now (server: to targets; client: dialTcp and forward). */
  tcpConnections: number;
  /** Bytes read from TCP sockets of gateway connections, counted as they go (server: from targets; client: from forward's local sockets). */
  tcpBytesIn: number;
  /** Bytes written to TCP sockets of gateway connections, counted as they go (server: to targets; client: to forward's local sockets). */
  tcpBytesOut: number;
}

export function emptyStats(): Stats {
  return { sessions: 0, streams: 0, channels: 0, byteStreams: 0, valuesIn: 0, valuesOut: 0, bytesIn: 0, bytesOut: 0, pendingReferences: 0, tcpConnections: 0, tcpBytesIn: 0, tcpBytesOut: 0 };
}

/**
 * Thrown by {@link StreamContext.decode} when a value names references whose streams have not
 * arrived yet (possible when a proxy spreads streams over several connections): decoding is
 * retried once `ready` settles.
 */
export class PendingReferences extends Error {
  constructor(readonly ready: Promise<void>) {
    super('value waits for referenced streams');
  }
}

export interface StreamContext {
  encode(value: unknown): Uint8Array;
  /** Decodes a value; throws NetchanError on bad input, PendingReferences to retry later. */
  decode(bytes: Uint8Array): unknown;
  readonly counters: Stats;
  /** The stream `streamId` failed for an error in what it carried (a rule the peer broke): for observers. */
  violated?(error: NetchanError, streamId: string): void;
}
