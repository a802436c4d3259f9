/**
 * The gateway's audit trail: one record per connection attempt, published on a
 * `node:diagnostics_channel` channel when it is over (docs/gateway.md).
 */
import diagnostics_channel from 'node:diagnostics_channel';
import { debug } from '../core/debug.js';

/** The `node:diagnostics_channel` channel that carries one {@link GatewayAuditEvent} per connection. */
export const GATEWAY_AUDIT_CHANNEL = 'netchan:gateway';
const auditChannel = diagnostics_channel.channel(GATEWAY_AUDIT_CHANNEL);

/** One audit record per connection attempt, published on {@link GATEWAY_AUDIT_CHANNEL} when it is over. */
export interface GatewayAuditEvent {
  /**
   * How it went: `closed` (ended by both sides), `reset` (either side reset or failed it),
   * `idle-timeout`, or a refusal: `forbidden`, `limit`, `refused`, `unreachable`, `timeout`,
   * `bad-request`, `unauthorized` (a stream or session that failed authentication), `cancelled`
   * (the client gave up before the connection was made).
   */
  outcome: 'closed' | 'reset' | 'idle-timeout' | 'forbidden' | 'limit' | 'refused' | 'unreachable' | 'timeout' | 'bad-request' | 'unauthorized' | 'cancelled';
  /** The error code the client was given, for refusals and failures. */
  code?: string;
  message?: string;
  principal: string;
  /** The session id (absent for `unauthorized`). */
  sessionId?: string;
  /** The client's address as the server's socket sees it, when known. */
  remoteAddress?: string;
  /** The target as requested (`host:port`), when there was one. */
  target?: string;
  /** The address connected to, or the one refused, once resolved. */
  address?: string;
  /** Bytes read from the target (sent to the client). */
  bytesFromTarget: number;
  /** Bytes written to the target (from the client). */
  bytesToTarget: number;
  /** From the request to the end of the connection, in ms. */
  durationMs: number;
}

export function publishAudit(event: GatewayAuditEvent): void {
  debug('gateway audit: %j', event);
  if (auditChannel.hasSubscribers) auditChannel.publish(event);
}
