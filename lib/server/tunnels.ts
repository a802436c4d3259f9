/**
 * What a server hands its `tcp` streams to (docs/PROTOCOL.md §8): the TCP gateway
 * (lib/gateway/) plugs in here, so that the server knows nothing of targets, DNS or policies and
 * a server without a gateway refuses every tunnel.
 */
import type { ServerWireStream } from '../transport/contract.js';

/** Who is asking, for the gateway: the session the stream belongs to. */
export interface GatewaySessionInfo {
  sessionId: string;
  principal: string;
  /**
   * Writes a frame on the session's own (control) stream. Called right after a tunnel's answer:
   * some proxies (nginx 1.22 with grpc_pass) hold a response's HEADERS until DATA follows on the
   * connection, and a tunnel has no frames of its own to send before its target speaks.
   */
  nudge?: () => void;
}

/** A server's handler of `tcp` streams. */
export interface TunnelService {
  /** Serves one `tcp` stream of a session (the session already tracks the stream). */
  handle(stream: ServerWireStream, who: GatewaySessionInfo): void;
  /** Bytes from and to the targets of the connections open now (closed ones are in the server's counters). */
  liveBytes(): { fromTargets: number; toTargets: number };
  /** Records a refused authentication, so a wrong token shows in the audit trail. */
  auditUnauthorized(info: { remoteAddress?: string; target?: string; message: string }): void;
  /** Resets every connection and refuses new ones. */
  close(): void;
}
