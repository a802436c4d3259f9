/**
 * The TCP gateway's server half (docs/gateway.md, docs/PROTOCOL.md §8). A client asks the
 * server, over its session, for a TCP connection to a target: a stream of kind `tcp` naming it.
 * The gateway resolves the name, checks its policy (lib/gateway/rules.ts) against every resolved
 * address, connects to exactly an address it checked, and joins the socket to the stream: the
 * stream's bytes are the connection's, its end is a FIN, a reset is a TCP reset. Every attempt is
 * audited (lib/gateway/audit.ts). It plugs into a server as its tunnel service; it knows streams
 * and sockets, nothing of channels.
 */
import dns from 'node:dns';
import net from 'node:net';
import { debug } from '../core/debug.js';
import { ErrorCodes, fromNodeError, netchanError } from '../core/errors.js';
import { Headers, header } from '../wire/headers.js';
import { formatHostPort, parseHostPort, type HostPort } from '../wire/host-port.js';
import type { Stats } from '../session/stream-context.js';
import { refuse as refuseStream } from '../session/refusal.js';
import type { ServerWireStream } from '../transport/contract.js';
import { join } from '../transport/relay.js';
import type { NetchanServer } from '../server/server.js';
import type { GatewaySessionInfo, TunnelService } from '../server/tunnels.js';
import { canonicalIp } from './addresses.js';
import { publishAudit, type GatewayAuditEvent } from './audit.js';
import { compileRules, judge, GATEWAY_DEFAULTS, type CompiledRule, type GatewayOptions } from './rules.js';

export type { GatewaySessionInfo } from '../server/tunnels.js';

/** Refusals for connect failures: which status, code and outcome. */
function connectFailure(err: unknown, target: string): { status: number; code: string; outcome: GatewayAuditEvent['outcome']; message: string } {
  const c = (err as { code?: string }).code;
  const detail = err instanceof Error ? err.message : String(err);
  if (c === 'ECONNREFUSED') return { status: 502, code: ErrorCodes.TARGET_REFUSED, outcome: 'refused', message: `${target} refused the connection` };
  if (c === 'ETIMEDOUT' || c === ErrorCodes.TARGET_TIMEOUT) return { status: 504, code: ErrorCodes.TARGET_TIMEOUT, outcome: 'timeout', message: `connecting to ${target} timed out` };
  return { status: 502, code: ErrorCodes.TARGET_UNREACHABLE, outcome: 'unreachable', message: `${target} is unreachable: ${detail}` };
}

/** Live connections of a gateway, for counting and for close(). */
interface Live {
  abort(): void;
  /** The target's socket: its byte counts are live. */
  socket: net.Socket;
}

/** A server's TCP gateway, as {@link createGateway} returns it. */
export interface Gateway {
  /** TCP connections open now. */
  readonly connections: number;
  /** Resets every connection and refuses new ones. */
  close(): void;
}

/**
 * The server half: made by {@link createGateway}, it serves the session streams of kind `tcp`.
 * One per server.
 */
class TcpGateway implements Gateway, TunnelService {
  private readonly rules: CompiledRule[];
  private readonly limits: { maxConnectionsPerSession: number; maxConnectionsPerPrincipal: number; connectTimeoutMs: number; idleTimeoutMs: number };
  private readonly lookup: (host: string) => Promise<{ address: string; family: number }[]>;
  private readonly bySession = new Map<string, number>();
  private readonly byPrincipal = new Map<string, number>();
  private readonly live = new Set<Live>();
  private closed = false;

  constructor(
    options: GatewayOptions,
    /** The server's counters (tcpConnections, tcpBytesIn, tcpBytesOut). */
    private readonly counters: Stats,
  ) {
    this.rules = compileRules(options.allow);
    this.limits = {
      maxConnectionsPerSession: options.maxConnectionsPerSession ?? GATEWAY_DEFAULTS.maxConnectionsPerSession,
      maxConnectionsPerPrincipal: options.maxConnectionsPerPrincipal ?? GATEWAY_DEFAULTS.maxConnectionsPerPrincipal,
      connectTimeoutMs: options.connectTimeoutMs ?? GATEWAY_DEFAULTS.connectTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs ?? GATEWAY_DEFAULTS.idleTimeoutMs,
    };
    this.lookup = options.lookup ?? ((host) => dns.promises.lookup(host, { all: true, verbatim: true }));
  }

  /** TCP connections open now. */
  get connections(): number {
    return this.live.size;
  }

  /** Serves one `tcp` stream of a session (the session already tracks the stream). */
  handle(stream: ServerWireStream, who: GatewaySessionInfo): void {
    const started = Date.now();
    const targetText = header(stream.headers, Headers.target);
    const base = { principal: who.principal, sessionId: who.sessionId, remoteAddress: stream.peer.remoteAddress, target: targetText };
    const audit = (event: Partial<GatewayAuditEvent> & Pick<GatewayAuditEvent, 'outcome'>): void => {
      publishAudit({ ...base, bytesFromTarget: 0, bytesToTarget: 0, durationMs: Date.now() - started, ...event });
    };
    const refuse = (status: number, code: string, message: string, outcome: GatewayAuditEvent['outcome'], address?: string): void => {
      refuseStream(stream, status, code, message);
      audit({ outcome, code, message, ...(address ? { address } : {}) });
    };
    if (this.closed) return refuse(503, ErrorCodes.SESSION_CLOSED, 'the gateway is closed', 'cancelled');
    let target: HostPort;
    try {
      target = parseHostPort(targetText ?? '');
    } catch {
      return refuse(400, ErrorCodes.PROTOCOL, `bad or missing ${Headers.target} header`, 'bad-request');
    }
    const inSession = this.bySession.get(who.sessionId) ?? 0;
    if (inSession >= this.limits.maxConnectionsPerSession) {
      return refuse(429, ErrorCodes.LIMIT, `this session has ${inSession} TCP connections open, the limit`, 'limit');
    }
    const ofPrincipal = this.byPrincipal.get(who.principal) ?? 0;
    if (ofPrincipal >= this.limits.maxConnectionsPerPrincipal) {
      return refuse(429, ErrorCodes.LIMIT, `principal has ${ofPrincipal} TCP connections open, the limit`, 'limit');
    }
    // counted from now on, so that requests racing through resolution cannot pass the caps
    this.bySession.set(who.sessionId, inSession + 1);
    this.byPrincipal.set(who.principal, ofPrincipal + 1);
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      decrement(this.bySession, who.sessionId);
      decrement(this.byPrincipal, who.principal);
    };
    let cancelled = false;
    const onEarlyClose = (): void => {
      cancelled = true;
      release();
    };
    stream.bytes.once('close', onEarlyClose);
    const shown = formatHostPort(target.host, target.port);
    void this.resolveAllowed(target, who.principal).then(
      async ({ allowed, refusal }) => {
        if (cancelled) return audit({ outcome: 'cancelled' });
        if (allowed.length === 0) {
          release();
          stream.bytes.off('close', onEarlyClose);
          return refuse(refusal!.status, refusal!.code, refusal!.message, refusal!.outcome, refusal!.address);
        }
        let socket: net.Socket | undefined;
        let lastError: unknown;
        for (const address of allowed) {
          if (cancelled) break;
          try {
            socket = await this.connect(address, target.port);
            break;
          } catch (err) {
            lastError = err;
          }
        }
        if (cancelled) {
          socket?.destroy();
          return audit({ outcome: 'cancelled' });
        }
        stream.bytes.off('close', onEarlyClose);
        if (!socket) {
          release();
          const f = connectFailure(lastError, shown);
          return refuse(f.status, f.code, f.message, f.outcome, allowed[allowed.length - 1]);
        }
        this.established(stream, socket, target, release, audit);
        who.nudge?.();
      },
      (err: unknown) => {
        release();
        stream.bytes.off('close', onEarlyClose);
        debug('gateway: %s', (err as Error).message);
        refuse(500, ErrorCodes.PROTOCOL, 'gateway failure', 'reset');
      },
    );
  }

  /** The addresses `target` resolves to that the policy allows, in resolver order, or why none. */
  private async resolveAllowed(
    target: HostPort,
    principal: string,
  ): Promise<{ allowed: string[]; refusal?: { status: number; code: string; message: string; outcome: GatewayAuditEvent['outcome']; address?: string } }> {
    const shown = formatHostPort(target.host, target.port);
    let addresses: { address: string; family: number }[];
    if (net.isIP(target.host)) {
      addresses = [{ address: canonicalIp(target.host), family: net.isIP(canonicalIp(target.host)) }];
    } else {
      try {
        addresses = await this.lookup(target.host);
      } catch (err) {
        const detail = (err as { code?: string }).code ?? (err as Error).message;
        return { allowed: [], refusal: { status: 502, code: ErrorCodes.TARGET_UNREACHABLE, message: `cannot resolve ${target.host}: ${detail}`, outcome: 'unreachable' } };
      }
      if (addresses.length === 0) {
        return { allowed: [], refusal: { status: 502, code: ErrorCodes.TARGET_UNREACHABLE, message: `${target.host} resolves to no address`, outcome: 'unreachable' } };
      }
    }
    const allowed: string[] = [];
    let special: { address: string; kind: string } | undefined;
    for (const { address, family } of addresses) {
      const ip = canonicalIp(address);
      const verdict = judge(this.rules, { principal, host: target.host, port: target.port, address: ip, family: family === 6 ? 6 : 4 });
      if (verdict.allowed) {
        if (!allowed.includes(ip)) allowed.push(ip);
      } else if (verdict.special && !special) {
        special = { address: ip, kind: verdict.special };
      }
    }
    if (allowed.length > 0) return { allowed };
    const who = principal === '' ? 'anonymous clients' : `principal ${principal}`;
    const message = special
      ? `${net.isIP(target.host) ? target.host : `${target.host} resolves to ${special.address}, which`} is a ${special.kind} address: only a rule naming that address allows it`
      : `target ${shown} is not allowed for ${who}`;
    return { allowed: [], refusal: { status: 403, code: ErrorCodes.FORBIDDEN_TARGET, message, outcome: 'forbidden', address: special?.address ?? canonicalIp(addresses[0]!.address) } };
  }

  /** Connects to exactly `address` (an IP: no second lookup). */
  private connect(address: string, port: number): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host: address, port, allowHalfOpen: true, noDelay: true });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(Object.assign(new Error(`connect to ${formatHostPort(address, port)} timed out`), { code: ErrorCodes.TARGET_TIMEOUT }));
      }, this.limits.connectTimeoutMs);
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
    });
  }

  private established(
    stream: ServerWireStream,
    socket: net.Socket,
    target: HostPort,
    release: () => void,
    audit: (event: Partial<GatewayAuditEvent> & Pick<GatewayAuditEvent, 'outcome'>) => void,
  ): void {
    const address = socket.remoteAddress ?? '';
    if (stream.gone) {
      release();
      socket.destroy();
      return audit({ outcome: 'cancelled', address });
    }
    debug('gateway: %s -> %s', formatHostPort(target.host, target.port), address);
    this.counters.tcpConnections++;
    stream.respond(200);
    let idle = false;
    const joined: Live = Object.assign(join(socket, stream, ({ outcome, error }) => {
      this.live.delete(joined);
      release();
      this.counters.tcpConnections--;
      this.counters.tcpBytesIn += socket.bytesRead;
      this.counters.tcpBytesOut += socket.bytesWritten;
      const e = idle
        ? netchanError(ErrorCodes.TIMEOUT, `no byte either way for ${this.limits.idleTimeoutMs} ms`)
        : error
          ? fromNodeError(error)
          : undefined;
      audit({
        outcome: idle ? 'idle-timeout' : outcome,
        address,
        bytesFromTarget: socket.bytesRead,
        bytesToTarget: socket.bytesWritten,
        ...(e ? { code: e.code, message: e.message } : {}),
      });
    }), { socket });
    this.live.add(joined);
    if (this.limits.idleTimeoutMs > 0) {
      socket.setTimeout(this.limits.idleTimeoutMs, () => {
        idle = true;
        joined.abort();
      });
    }
  }

  /** Bytes from and to the targets of the connections open now (closed ones are in the counters). */
  liveBytes(): { fromTargets: number; toTargets: number } {
    let fromTargets = 0;
    let toTargets = 0;
    for (const c of this.live) {
      fromTargets += c.socket.bytesRead;
      toTargets += c.socket.bytesWritten;
    }
    return { fromTargets, toTargets };
  }

  /**
   * Records a refused authentication (the server calls this when a stream or WebSocket fails
   * authentication), so a wrong token shows in the audit trail.
   */
  auditUnauthorized(info: { remoteAddress?: string; target?: string; message: string }): void {
    publishAudit({
      outcome: 'unauthorized',
      code: ErrorCodes.UNAUTHORIZED,
      message: info.message,
      principal: '',
      ...(info.remoteAddress ? { remoteAddress: info.remoteAddress } : {}),
      ...(info.target ? { target: info.target } : {}),
      bytesFromTarget: 0,
      bytesToTarget: 0,
      durationMs: 0,
    });
  }

  /** Resets every connection and refuses new ones. */
  close(): void {
    this.closed = true;
    for (const c of [...this.live]) c.abort();
  }
}

function decrement(map: Map<string, number>, key: string): void {
  const n = (map.get(key) ?? 1) - 1;
  if (n > 0) map.set(key, n);
  else map.delete(key);
}

/**
 * Makes `server` a TCP gateway (docs/gateway.md): its clients may then open TCP connections
 * (`session.dialTcp`, `session.forward`) to the targets `options.allow` permits, and to nothing
 * else. Calling it again replaces the policy (connections already open stay).
 */
export function createGateway(server: NetchanServer, options: GatewayOptions): Gateway {
  const gateway = new TcpGateway(options, server.statsRef);
  server.serveTunnels(gateway);
  return gateway;
}
