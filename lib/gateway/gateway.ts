/**
 * The TCP gateway (docs/gateway.md, docs/PROTOCOL.md §8). A client asks the server, over its
 * session, for a TCP connection to a target: a stream of kind `tcp` naming the target. The server
 * resolves the name, checks its policy against every resolved address, connects to exactly an
 * address it checked, and joins the socket to the stream: the stream's bytes are the connection's
 * bytes, END_STREAM is a FIN, a reset is a TCP reset. On the client the stream is a Duplex of its
 * own (`session.dialTcp`) or joined to a local socket (`session.forward`).
 *
 * A thin adapter on top of the session: it knows streams and sockets, nothing of channels.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import dns from 'node:dns';
import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { debuglog } from 'node:util';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import type { Stats } from '../session/stream-context.js';
import { resetStream } from '../transport/stream-reset.js';
import type { ClientStream, ResponseHeaders, ServerStream } from '../transport/connect.js';

const debug = debuglog('netchan');

/** The `node:diagnostics_channel` channel that carries one {@link GatewayAuditEvent} per connection. */
export const GATEWAY_AUDIT_CHANNEL = 'netchan:gateway';
const auditChannel = diagnostics_channel.channel(GATEWAY_AUDIT_CHANNEL);

/** Request header naming the target of a `tcp` stream (docs/PROTOCOL.md §8). */
export const TARGET_HEADER = 'netchan-target';

// ---------------------------------------------------------------------------------------------
// Addresses and targets

/** A `host:port` split: `host` without brackets (an IPv6 literal is bare). */
export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `host:port` or `[v6]:port`. `port` must be 1–65535 (0 too with `allowPortZero`, for a
 * local listener). Throws ERR_INVALID_ARGUMENT.
 */
export function parseHostPort(text: string, allowPortZero = false): HostPort {
  const m = typeof text === 'string' ? /^(?:\[([0-9a-fA-F:.]+)\]|([^\s:[\]/]+)):(\d{1,5})$/.exec(text) : null;
  const host = m ? (m[1] ?? m[2])! : '';
  const port = m ? Number(m[3]) : NaN;
  if (!m || host.length > 253 || port > 65535 || (port === 0 && !allowPortZero) || (m[1] !== undefined && net.isIPv6(host) === false)) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, `expected host:port (or [ipv6]:port), got ${JSON.stringify(text)}`);
  }
  return { host, port };
}

/** `host:port`, with brackets around an IPv6 literal. */
export function formatHostPort(host: string, port: number): string {
  return `${net.isIPv6(host) ? `[${host}]` : host}:${port}`;
}

/** The eight 16-bit groups of a valid IPv6 address, however it is spelled (`::`, leading zeros, a dotted tail). */
function ipv6Groups(address: string): number[] {
  let text = address;
  const dotted = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(2).map(Number) as [number, number, number, number];
    text = `${dotted[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((g) => parseInt(g, 16)));
  const gap = text.indexOf('::');
  if (gap < 0) return parse(text);
  const head = parse(text.slice(0, gap));
  const tail = parse(text.slice(gap + 2));
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
}

/**
 * The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`) or NAT64 (`64:ff9b::/96`) IPv6
 * address, in any spelling of it (`0064:ff9b:0::7f00:1` too), or undefined.
 */
function embeddedIPv4(address: string): string | undefined {
  if (!net.isIPv6(address)) return undefined;
  const g = ipv6Groups(address);
  const mapped = g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff;
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0;
  if (!mapped && !nat64) return undefined;
  const hi = g[6]!;
  const lo = g[7]!;
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Canonical form of an IP address: IPv4-mapped IPv6 becomes IPv4; IPv6 lowercase. */
function canonicalIp(address: string): string {
  if (net.isIPv6(address)) {
    const g = ipv6Groups(address);
    const mapped = g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff;
    return (mapped ? embeddedIPv4(address) : undefined) ?? address.toLowerCase();
  }
  return address;
}

function familyOf(address: string): 'ipv4' | 'ipv6' {
  return net.isIPv4(address) ? 'ipv4' : 'ipv6';
}

/** Address ranges a name may never lead to unless a rule names the address itself. */
const SPECIAL_RANGES: [string, number, 'ipv4' | 'ipv6', string][] = [
  ['169.254.169.254', 32, 'ipv4', 'cloud metadata'],
  ['100.100.100.200', 32, 'ipv4', 'cloud metadata'],
  ['fd00:ec2::254', 128, 'ipv6', 'cloud metadata'],
  ['0.0.0.0', 8, 'ipv4', 'unspecified ("this network")'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['ff00::', 8, 'ipv6', 'multicast'],
];
const specialLists = SPECIAL_RANGES.map(([network, prefix, type, kind]) => {
  const list = new net.BlockList();
  list.addSubnet(network, prefix, type);
  return { list, kind };
});

/**
 * What kind of special address `address` is (`loopback`, `link-local`, `cloud metadata`, …), or
 * `undefined` for an ordinary one. IPv4 inside IPv4-mapped and NAT64 IPv6 addresses counts too.
 */
export function specialAddressKind(address: string): string | undefined {
  const ip = canonicalIp(address);
  const inner = net.isIPv6(ip) ? embeddedIPv4(ip) : undefined;
  for (const candidate of inner ? [ip, inner] : [ip]) {
    const type = familyOf(candidate);
    for (const { list, kind } of specialLists) if (list.check(candidate, type)) return kind;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Policy

/** What a policy function is asked about: one resolved address of one requested target. */
export interface GatewayTargetRequest {
  /** The session's principal (`cert:<CN>`, what the app's auth set, `''` when anonymous). */
  principal: string;
  /** The host as the client named it (a name or an IP literal, without brackets). */
  host: string;
  port: number;
  /** One address `host` resolved to (the one that would be connected to). */
  address: string;
  family: 4 | 6;
}

/**
 * One allow rule:
 * - a string `HOST:PORT`: HOST is `*`, a name (`db.internal`; `*.svc.local` for any name under
 *   it), an IP address (`10.0.0.5`, `[fd00::5]`) or a CIDR range (`10.0.0.0/8`, `[fd00::/8]`);
 *   PORT is a number, a range `5000-5999`, or `*`;
 * - a function of the request (called once per resolved address), true to allow.
 *
 * Only a rule naming the IP address or a range containing it allows a special address
 * (loopback, link-local, cloud metadata, unspecified, multicast; see {@link specialAddressKind}):
 * `*`, names and functions never do, so a name cannot smuggle one in.
 */
export type GatewayTargetRule = string | ((request: GatewayTargetRequest) => boolean);

/** A rule for some principals only: `principal` is a principal, a list, or a predicate. */
export interface GatewayPrincipalRule {
  principal: string | string[] | ((principal: string) => boolean);
  allow: GatewayTargetRule | GatewayTargetRule[];
}

/** A rule of {@link GatewayOptions.allow}: for every principal, or for some. */
export type GatewayRule = GatewayTargetRule | GatewayPrincipalRule;

/** Options of `server.gateway()`. */
export interface GatewayOptions {
  /**
   * What may be reached. Deny by default: a target is allowed only when a rule allows one of the
   * addresses it resolves to (see {@link GatewayTargetRule}). Rules without a principal apply to
   * every session, anonymous ones included.
   */
  allow: GatewayRule | GatewayRule[];
  /** TCP connections one session may have open at once. Default 256. */
  maxConnectionsPerSession?: number;
  /** TCP connections one principal may have open at once, over all its sessions. Default 1024. */
  maxConnectionsPerPrincipal?: number;
  /** How long the server tries to connect to a target, per address, in ms. Default 10000. */
  connectTimeoutMs?: number;
  /** A connection with no bytes either way for this long is reset, in ms. 0: never. Default 3600000 (1 h). */
  idleTimeoutMs?: number;
  /** Resolves a name to its addresses. Default: `dns.lookup` (the system resolver, hosts file included). */
  lookup?: (host: string) => Promise<{ address: string; family: number }[]>;
}

/** Defaults of {@link GatewayOptions}. */
export const GATEWAY_DEFAULTS = {
  maxConnectionsPerSession: 256,
  maxConnectionsPerPrincipal: 1024,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 3_600_000,
} as const;

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

interface CompiledRule {
  principal?: (principal: string) => boolean;
  test: GatewayTargetRule;
  /** Parsed form of a string rule. */
  host?: { kind: 'any' } | { kind: 'name'; name: string; suffix: boolean } | { kind: 'ip'; list: net.BlockList };
  ports?: [number, number];
}

function compilePort(text: string, rule: string): [number, number] {
  if (text === '*') return [1, 65535];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `bad port in gateway rule ${JSON.stringify(rule)}`);
  return [lo, hi];
}

function compileTarget(rule: GatewayTargetRule, principal?: (p: string) => boolean): CompiledRule {
  if (typeof rule === 'function') return { principal, test: rule };
  if (typeof rule !== 'string') throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'a gateway rule is a HOST:PORT string or a function');
  const m = /^(?:\[([0-9a-fA-F:.]+(?:\/\d{1,3})?)\]|([^\s:[\]]+)):([\d*-]+)$/.exec(rule);
  if (!m) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `gateway rule must be HOST:PORT, got ${JSON.stringify(rule)}`);
  const hostText = (m[1] ?? m[2])!;
  const ports = compilePort(m[3]!, rule);
  const [ipText, prefixText] = hostText.split('/') as [string, string | undefined];
  if (hostText === '*') return { principal, test: rule, host: { kind: 'any' }, ports };
  if (net.isIP(ipText)) {
    const ip = canonicalIp(ipText);
    const type = familyOf(ip);
    const max = type === 'ipv4' ? 32 : 128;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `bad prefix in gateway rule ${JSON.stringify(rule)}`);
    const list = new net.BlockList();
    list.addSubnet(ip, prefix, type);
    return { principal, test: rule, host: { kind: 'ip', list }, ports };
  }
  if (prefixText !== undefined || !/^(\*\.)?[a-zA-Z0-9_]([a-zA-Z0-9_.-]*[a-zA-Z0-9_])?\.?$/.test(hostText)) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, `bad host in gateway rule ${JSON.stringify(rule)}`);
  }
  const suffix = hostText.startsWith('*.');
  const name = normalizeName(suffix ? hostText.slice(1) : hostText);
  return { principal, test: rule, host: { kind: 'name', name, suffix }, ports };
}

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function compileRules(allow: GatewayRule | GatewayRule[]): CompiledRule[] {
  if (allow === undefined) throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'gateway needs allow rules (deny by default: an empty list allows nothing)');
  const out: CompiledRule[] = [];
  for (const rule of Array.isArray(allow) ? allow : [allow]) {
    if (typeof rule === 'object' && rule !== null && 'principal' in rule) {
      const p = rule.principal;
      const matches = typeof p === 'function' ? p : Array.isArray(p) ? (x: string) => p.includes(x) : (x: string) => x === p;
      for (const t of Array.isArray(rule.allow) ? rule.allow : [rule.allow]) out.push(compileTarget(t, matches));
    } else {
      out.push(compileTarget(rule as GatewayTargetRule));
    }
  }
  return out;
}

/** The verdict on one resolved address. */
interface Verdict {
  allowed: boolean;
  /** Why not, when a name rule matched but the address is special. */
  special?: string;
}

function judge(rules: CompiledRule[], request: GatewayTargetRequest): Verdict {
  const address = canonicalIp(request.address);
  const special = specialAddressKind(address);
  const host = normalizeName(request.host);
  let nameMatched = false;
  for (const rule of rules) {
    if (rule.principal && !safely(() => rule.principal!(request.principal))) continue;
    if (typeof rule.test === 'function') {
      const fn = rule.test;
      if (safely(() => fn({ ...request, address }))) {
        if (!special) return { allowed: true };
        nameMatched = true;
      }
      continue;
    }
    const [lo, hi] = rule.ports!;
    if (request.port < lo || request.port > hi) continue;
    const h = rule.host!;
    if (h.kind === 'ip') {
      if (h.list.check(address, familyOf(address))) return { allowed: true };
      continue;
    }
    const matches = h.kind === 'any' || (h.suffix ? host.endsWith(h.name) && host.length > h.name.length : host === h.name);
    if (!matches) continue;
    if (!special) return { allowed: true };
    nameMatched = true;
  }
  return nameMatched ? { allowed: false, special } : { allowed: false };
}

function safely(fn: () => boolean): boolean {
  try {
    return fn() === true;
  } catch (err) {
    debug('gateway policy threw: %s', (err as Error).message);
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Joining a socket and a stream (both sides)

/** How a joined connection ended. */
interface JoinResult {
  outcome: 'closed' | 'reset';
  error?: Error;
}

/**
 * Joins a TCP socket and a tunnel stream: bytes both ways with backpressure (pipe), each FIN as
 * the other's END_STREAM and back (half-close), a reset or failure on either side as a reset of
 * the other. Calls `done` once both are closed.
 */
function join(socket: net.Socket, stream: Duplex, done: (result: JoinResult) => void, socketPiped = false): { abort(): void } {
  let socketClosed = false;
  let streamClosed = false;
  let reset = false;
  let error: Error | undefined;
  socket.on('error', (err) => {
    error ??= err;
    debug('gateway socket error: %s', err.message);
  });
  stream.on('error', (err) => {
    error ??= err;
    debug('gateway stream error: %s', err.message);
  });
  const resetTunnel = (): void => {
    reset = true;
    // close(code) ends the writable side first when it can (END_STREAM, then RST_STREAM), which
    // the peer would read as a FIN: a failed tunnel is destroyed, a bare reset
    resetStream(stream, netchanError(ErrorCodes.STREAM_RESET, 'tunnel reset'));
  };
  const resetSocket = (): void => {
    reset = true;
    if (!socket.destroyed) socket.resetAndDestroy();
  };
  const maybeDone = (): void => {
    if (socketClosed && streamClosed) done({ outcome: reset || error ? 'reset' : 'closed', error });
  };
  const onSocketClose = (hadError: boolean): void => {
    socketClosed = true;
    // A clean close means both FINs went through and everything was written: the stream then
    // finishes on its own. Anything else is a failure the peer must see as one.
    if (hadError || error || !socket.readableEnded || !socket.writableFinished) resetTunnel();
    maybeDone();
  };
  const onStreamClose = (): void => {
    streamClosed = true;
    if (isReset(stream) || !stream.readableEnded) resetSocket();
    maybeDone();
  };
  if (socket.destroyed) onSocketClose(false);
  else socket.once('close', onSocketClose);
  if (stream.destroyed) onStreamClose();
  else stream.once('close', onStreamClose);
  // An HTTP/2 stream reset by the peer also ends its readable side: only a clean end is a FIN.
  stream.pipe(socket, { end: false });
  stream.once('end', () => {
    if (isReset(stream)) resetSocket();
    else socket.end();
  });
  if (!socketPiped) socket.pipe(stream);
  return {
    abort() {
      resetTunnel();
      resetSocket();
    },
  };
}

function isReset(stream: Duplex): boolean {
  const rst = (stream as { rstCode?: number }).rstCode;
  return rst !== undefined && rst !== 0;
}

// ---------------------------------------------------------------------------------------------
// Server side

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

function respondRefusal(stream: ServerStream, status: number, code: string, message: string): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.headersSent) {
    stream.respond({ ':status': status, 'netchan-error': code, 'netchan-message': message.replace(/[\r\n]/g, ' '), 'content-type': 'text/plain' });
  }
  stream.end(`${code}: ${message}\n`);
  stream.resume();
}

function remoteAddressOf(stream: ServerStream): string | undefined {
  const s = stream as { session?: { socket?: { remoteAddress?: string } } };
  return s.session?.socket?.remoteAddress;
}

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

/**
 * The server half: enabled by `server.gateway(options)`, it serves the session streams of kind
 * `tcp`. One per server.
 */
export class Gateway {
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
  handle(stream: ServerStream, headers: Record<string, string | string[] | undefined>, who: GatewaySessionInfo): void {
    const started = Date.now();
    const raw = headers[TARGET_HEADER];
    const targetText = Array.isArray(raw) ? raw[0] : raw;
    const base = { principal: who.principal, sessionId: who.sessionId, remoteAddress: remoteAddressOf(stream), target: targetText };
    const audit = (event: Partial<GatewayAuditEvent> & Pick<GatewayAuditEvent, 'outcome'>): void => {
      publishAudit({ ...base, bytesFromTarget: 0, bytesToTarget: 0, durationMs: Date.now() - started, ...event });
    };
    const refuse = (status: number, code: string, message: string, outcome: GatewayAuditEvent['outcome'], address?: string): void => {
      respondRefusal(stream, status, code, message);
      audit({ outcome, code, message, ...(address ? { address } : {}) });
    };
    if (this.closed) return refuse(503, ErrorCodes.SESSION_CLOSED, 'the gateway is closed', 'cancelled');
    let target: HostPort;
    try {
      target = parseHostPort(targetText ?? '');
    } catch {
      return refuse(400, ErrorCodes.PROTOCOL, `bad or missing ${TARGET_HEADER} header`, 'bad-request');
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
    stream.once('close', onEarlyClose);
    const shown = formatHostPort(target.host, target.port);
    void this.resolveAllowed(target, who.principal).then(
      async ({ allowed, refusal }) => {
        if (cancelled) return audit({ outcome: 'cancelled' });
        if (allowed.length === 0) {
          release();
          stream.off('close', onEarlyClose);
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
        stream.off('close', onEarlyClose);
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
        stream.off('close', onEarlyClose);
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
    stream: ServerStream,
    socket: net.Socket,
    target: HostPort,
    release: () => void,
    audit: (event: Partial<GatewayAuditEvent> & Pick<GatewayAuditEvent, 'outcome'>) => void,
  ): void {
    const address = socket.remoteAddress ?? '';
    if (stream.destroyed || stream.closed) {
      release();
      socket.destroy();
      return audit({ outcome: 'cancelled', address });
    }
    debug('gateway: %s -> %s', formatHostPort(target.host, target.port), address);
    this.counters.tcpConnections++;
    stream.respond({ ':status': 200 });
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

  /** Bytes from and to the targets of the connections open now (closed ones are in the counters). @internal */
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

function publishAudit(event: GatewayAuditEvent): void {
  debug('gateway audit: %j', event);
  if (auditChannel.hasSubscribers) auditChannel.publish(event);
}

// ---------------------------------------------------------------------------------------------
// Client side

/** What the client half needs of its session. @internal */
export interface TcpOpener {
  /** Opens a `tcp` stream naming `target` (throws when the session cannot open streams). */
  open(target: string): ClientStream;
  readonly counters: Stats;
  /** Local sockets of forwarded connections open now: their byte counts are live. */
  readonly forwarded: Set<net.Socket>;
  /** The session: its `'close'` event resets the tunnels at once (they have nothing to drain). */
  readonly session: EventEmitter;
}

/** Opens a tunnel stream that is reset as soon as its session ends. */
function openTunnel(opener: TcpOpener, target: string): ClientStream {
  const stream = opener.open(target);
  const onSessionEnd = (): void => resetStream(stream, netchanError(ErrorCodes.SESSION_CLOSED, 'session closed'));
  opener.session.once('close', onSessionEnd);
  stream.once('close', () => opener.session.off('close', onSessionEnd));
  return stream;
}

/** Options of `session.dialTcp`. */
export interface DialTcpOptions {
  /** Gives up (resetting the stream) when it fires: ERR_ABORTED. */
  signal?: AbortSignal;
}

/** Options of `session.forward`. */
export interface ForwardOptions {
  /** Where to listen: `host:port` (port 0 picks a free one). Default `127.0.0.1:0`. */
  local?: string;
  /** The target, as the server resolves it: `host:port`. */
  target: string;
}

function refusal(headers: ResponseHeaders): NetchanError {
  const status = Number(headers[':status']);
  const pick = (name: string): string | undefined => {
    const v = headers[name];
    return Array.isArray(v) ? v[0] : v === undefined ? undefined : String(v);
  };
  const code = pick('netchan-error') ?? (status === 401 || status === 403 ? ErrorCodes.UNAUTHORIZED : ErrorCodes.PROTOCOL);
  return netchanError(code, pick('netchan-message') ?? `gateway answered ${status}`, { status });
}

/** Waits for the answer to a `tcp` stream: the stream once connected, or the refusal. */
function established(stream: ClientStream, signal?: AbortSignal): Promise<ClientStream> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      stream.off('response', onResponse);
      stream.off('close', onClose);
      stream.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onResponse = (headers: ResponseHeaders): void => {
      cleanup();
      if (Number(headers[':status']) === 200) return resolve(stream);
      stream.resume();
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(refusal(headers));
    };
    let lastError: Error | undefined;
    const onError = (err: Error): void => {
      lastError = err;
    };
    const onClose = (): void => {
      cleanup();
      reject(lastError ? fromNodeError(lastError) : netchanError(ErrorCodes.CONNECTION_LOST, 'the tunnel stream closed before the gateway answered'));
    };
    const onAbort = (): void => {
      cleanup();
      stream.close(http2.constants.NGHTTP2_CANCEL);
      reject(netchanError(ErrorCodes.ABORTED, 'dialTcp aborted', { cause: signal?.reason }));
    };
    if (signal?.aborted) return onAbort();
    stream.once('response', onResponse);
    stream.on('error', onError);
    stream.once('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function counted(stream: ClientStream, counters: Stats): void {
  counters.tcpConnections++;
  stream.once('close', () => counters.tcpConnections--);
}

/**
 * Opens one TCP connection through the gateway: resolves, once the server connected, to a Duplex
 * whose bytes are the connection's (`end()` half-closes; a reset arrives as an error). Rejects
 * with the refusal: ERR_FORBIDDEN_TARGET, ERR_TARGET_REFUSED, ERR_TARGET_UNREACHABLE,
 * ERR_TARGET_TIMEOUT, ERR_LIMIT. @internal use `session.dialTcp`
 */
export async function dialTcp(opener: TcpOpener, target: string, options: DialTcpOptions = {}): Promise<Duplex> {
  const { host, port } = parseHostPort(target);
  const stream = openTunnel(opener, formatHostPort(host, port));
  await established(stream, options.signal);
  counted(stream, opener.counters);
  return stream;
}

/**
 * A local listener whose connections are forwarded through the gateway to one target; it closes
 * when its session ends. Events:
 * `'connection'` (local socket) once a connection is through, `'connectionError'` (NetchanError,
 * local socket) when the gateway refused or failed one (the local socket is then reset).
 */
export class Forwarder extends EventEmitter {
  private readonly sockets = new Set<net.Socket>();
  private closing: Promise<void> | null = null;

  /** @internal */
  constructor(
    private readonly server: net.Server,
    /** The target every connection is forwarded to. */
    readonly target: string,
  ) {
    super();
  }

  /** The bound local address. */
  get address(): AddressInfo {
    return this.server.address() as AddressInfo;
  }

  /** Local connections open now. */
  get connections(): number {
    return this.sockets.size;
  }

  /** @internal */
  adopt(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
  }

  /** Stops listening and resets the connections still open. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const s of this.sockets) s.resetAndDestroy();
    });
    return this.closing;
  }
}

/**
 * Listens on `options.local` and forwards each connection to `options.target` through the
 * gateway. @internal use `session.forward`
 */
export async function forward(opener: TcpOpener, options: ForwardOptions): Promise<Forwarder> {
  const { host: th, port: tp } = parseHostPort(options?.target);
  const target = formatHostPort(th, tp);
  const local = parseHostPort(options.local ?? '127.0.0.1:0', true);
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true });
  const forwarder = new Forwarder(server, target);
  server.on('connection', (socket) => {
    forwarder.adopt(socket);
    socket.on('error', (err) => debug('forward: local socket error: %s', err.message));
    let stream: ClientStream;
    try {
      stream = openTunnel(opener, target);
    } catch (err) {
      socket.resetAndDestroy();
      forwarder.emit('connectionError', err, socket);
      return;
    }
    // the client's first bytes go out at once, ahead of the answer (the server holds them
    // until it has connected, or drops them with a refusal)
    socket.pipe(stream);
    const giveUp = (): void => stream.close(http2.constants.NGHTTP2_CANCEL);
    socket.once('close', giveUp);
    established(stream).then(
      () => {
        socket.off('close', giveUp);
        counted(stream, opener.counters);
        opener.forwarded.add(socket);
        join(
          socket,
          stream,
          () => {
            opener.forwarded.delete(socket);
            opener.counters.tcpBytesIn += socket.bytesRead;
            opener.counters.tcpBytesOut += socket.bytesWritten;
          },
          true,
        );
        forwarder.emit('connection', socket);
      },
      (err: NetchanError) => {
        socket.off('close', giveUp);
        socket.unpipe(stream);
        if (!socket.destroyed) socket.resetAndDestroy();
        forwarder.emit('connectionError', err, socket);
      },
    );
  });
  // a forwarder lives as long as its session
  const onSessionEnd = (): void => void forwarder.close();
  opener.session.once('close', onSessionEnd);
  server.once('close', () => opener.session.off('close', onSessionEnd));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => {
      opener.session.off('close', onSessionEnd);
      reject(fromNodeError(err, ErrorCodes.INVALID_ARGUMENT));
    });
    server.listen(local.port, local.host, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => debug('forward: listener error: %s', err.message));
      resolve();
    });
  });
  return forwarder;
}
