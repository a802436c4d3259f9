/**
 * The server: exports named channels, accepts sessions and their streams. The streams come from
 * a standalone `node:http2` secure server (`listen`) or from an existing app (`handleStream`,
 * used by the Express adapter). The server never opens a stream.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { WebSocketServer } from 'ws';
import { Channel } from './channel.js';
import { ChannelExporter, type ExportableChannel } from './channel-stream.js';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from './errors.js';
import { FrameType } from './frames.js';
import type { FramedStream } from './framed-stream.js';
import { Gateway, TARGET_HEADER, type GatewayOptions } from './gateway.js';
import { Headers, PROTOCOL_VERSION, SessionCore, debug, joinBytes, newSessionId, type BytesMode, type SessionOptions } from './session.js';
import { emptyStats, type Stats } from './stream-context.js';
import { resetStream } from './stream-reset.js';
import type { ServerStream } from './transport.js';
import { MUX_MAX_MESSAGE, WS_SUBPROTOCOL, WsMux } from './ws-mux.js';

const {
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
} = http2.constants;

/** Options of {@link createServer}. */
export interface ServerOptions extends SessionOptions {
  /** Server private key (PEM). */
  key?: string | Buffer;
  /** Server certificate chain (PEM). */
  cert?: string | Buffer;
  /** CA certificates trusted for client certificates (mTLS). */
  ca?: string | Buffer | (string | Buffer)[];
  /** Ask clients for a certificate and refuse those without a valid one (mTLS). Default false. */
  requestCert?: boolean;
  /** Path the standalone server serves netchan on. Default '/'. */
  path?: string;
  /** Heartbeat interval the server asks clients to keep, in ms. Default 15000. */
  heartbeatIntervalMs?: number;
  /** A session whose control stream is silent this long is ended, in ms. Default 45000. */
  idleTimeoutMs?: number;
  /** How long a session may leave a reference it was sent unopened, in ms. Default 60000. */
  pendingReferenceTimeoutMs?: number;
  /**
   * Serve plaintext (h2c and WebSocket without TLS): for loopback, a unix socket, or behind a
   * TLS-terminating proxy. Default false: `listen` needs `key` and `cert`.
   */
  insecure?: boolean;
  /** Channel streams one session may have open at once (named, exported, references). Default 4096. */
  maxChannelsPerSession?: number;
  /** Byte streams one session may have open at once. Default 1024. */
  maxByteStreamsPerSession?: number;
  /**
   * Sessions one authenticated principal may have open at once. Default 256. Anonymous sessions
   * (principal `''`) are not counted against it.
   */
  maxSessionsPerPrincipal?: number;
  /**
   * The server's policy: whether `principal` may use the exported channel `channel` by name.
   * Default: everyone may. A refusal is `403 ERR_UNAUTHORIZED` on that channel only. The
   * principal is what the app's auth established (Express) or `cert:<CN>` of an mTLS client
   * certificate (standalone server), `''` when anonymous.
   */
  authorize?: (request: { principal: string; channel: string }) => boolean;
  /**
   * Authenticates every stream (and WebSocket upgrade) of the standalone server (`listen`), e.g.
   * by a bearer token: returns the principal, or `false`/`undefined` to refuse with
   * `401 ERR_UNAUTHORIZED`. Gets the request headers and the mTLS principal (`cert:<CN>`, or
   * `''`). Default: the mTLS principal, anonymous without one. Under Express the app's own
   * middleware authenticates instead.
   */
  authenticate?: (request: { headers: StreamHeaders; principal: string }) => string | false | undefined;
  /**
   * How long a session whose connection was lost is kept for the client to resume it, in ms
   * (docs/PROTOCOL.md §4.5). Its channel streams keep their state meanwhile; after the lease the
   * session ends and the values its client had not received go back to their channels.
   * Default 10000; 0 disables resumption.
   */
  sessionLeaseMs?: number;
}

/** Defaults of the limits in {@link ServerOptions}. */
export const DEFAULT_LIMITS = {
  maxChannelsPerSession: 4096,
  maxByteStreamsPerSession: 1024,
  maxSessionsPerPrincipal: 256,
} as const;

/** Who a stream belongs to, as the app's auth (or mTLS) established it. */
export interface StreamContextInfo {
  /** The authenticated principal; streams of one session must all present the same one. */
  principal?: string;
}

interface PendingExport {
  kind: 'channel' | 'bytes';
  obj: object;
  mode?: BytesMode;
  timer: NodeJS.Timeout;
}

/** A stream the client exported, waiting for the value that names it. */
interface Unclaimed {
  kind: 'channel' | 'bytes';
  obj: object;
  mode?: BytesMode;
  timer: NodeJS.Timeout;
}

function refuse(stream: ServerStream, status: number, code: string, message: string): void {
  if (stream.destroyed || stream.closed) return;
  if (!stream.headersSent) {
    stream.respond({ [HTTP2_HEADER_STATUS]: status, [Headers.error]: code, [Headers.message]: message, 'content-type': 'text/plain' });
  }
  stream.end(`${code}: ${message}\n`);
  stream.resume();
}

function header(headers: StreamHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Request headers of a stream, as HTTP/2 or the WebSocket mux gives them. */
export type StreamHeaders = Record<string, string | string[] | undefined>;

/** One client's logical session on the server: a random id bound to a principal. */
export class ServerSession extends SessionCore {
  private nextRef = 1;
  private readonly pendingExports = new Map<string, PendingExport>();
  /** Channels and byte streams the client exported whose reference has not been decoded yet. */
  private readonly unclaimed = new Map<string, Unclaimed>();
  /** Exported streams refused over a limit (the most recent 1024), with why. */
  private readonly refused = new Map<string, string>();
  private control: FramedStream | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  private lastFrameAt = Date.now();

  constructor(
    readonly server: NetchanServer,
    readonly principal: string,
    options: ServerOptions,
    /** The lease agreed with the client (0: not resumable). */
    readonly leaseMs = 0,
  ) {
    super(newSessionId(), server.statsRef, options);
    this.resumable = leaseMs > 0;
  }

  /** True while the session waits for its client to resume it. */
  get detached(): boolean {
    return this.leaseTimer !== null;
  }

  /** Binds the control stream: heartbeats arrive here; its end is the session's end. */
  attachControl(stream: ServerStream, idleTimeoutMs: number): void {
    const fs = this.framed(stream);
    this.control = fs;
    this.lastFrameAt = Date.now();
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.track(fs.stream);
    const current = () => this.control === fs;
    fs.setSink({
      onFrame: (type, payload) => {
        this.lastFrameAt = Date.now();
        if (type === FrameType.PING) fs.frame(FrameType.PONG, payload);
      },
      onStreamEnd: () => {
        if (current()) this.end(netchanError(ErrorCodes.SESSION_CLOSED, 'client closed the session'), true);
      },
      onStreamError: (err) => {
        if (!current()) return;
        if (this.resumable && err.code === ErrorCodes.CONNECTION_LOST) this.detach();
        else this.end(err);
      },
      onStreamClose: () => {
        if (current() && !this.detached) this.end(netchanError(ErrorCodes.SESSION_CLOSED, 'control stream closed'));
      },
    });
    // Data right behind the answer: some proxies (nginx 1.22 with grpc_pass) hold a response's
    // HEADERS until DATA follows, and the client waits for them (docs/PROTOCOL.md §4.1).
    fs.frame(FrameType.PING, randomBytes(8));
    this.idleTimer = setInterval(() => {
      if (Date.now() - this.lastFrameAt > idleTimeoutMs) {
        this.end(netchanError(ErrorCodes.TIMEOUT, `no heartbeat for ${idleTimeoutMs} ms`));
      }
    }, Math.max(50, Math.floor(idleTimeoutMs / 3)));
    this.idleTimer.unref();
  }

  /**
   * The connection is gone: keep the session for its lease. Channel streams cut off with it are
   * suspended (they keep their state and unconfirmed frames); byte streams are lost.
   */
  private detach(): void {
    if (this.ended || this.leaseTimer) return;
    debug('session %s detached; lease %d ms', this.id, this.leaseMs);
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = null;
    this.control = null;
    this.leaseTimer = setTimeout(() => {
      this.leaseTimer = null;
      this.end(netchanError(ErrorCodes.CONNECTION_LOST, `session not resumed within its lease of ${this.leaseMs} ms`));
    }, this.leaseMs);
    this.leaseTimer.unref();
  }

  /** The client resumes this session on a new connection (a session stream naming it). */
  resumeControl(stream: ServerStream, idleTimeoutMs: number, responseHeaders: Record<string, string | number>): void {
    const old = this.control;
    if (old) {
      // the client saw the old connection die before we did
      this.control = null;
      old.destroy();
    }
    stream.respond(responseHeaders);
    this.attachControl(stream, idleTimeoutMs);
    debug('session %s resumed', this.id);
  }

  /** A channel stream of this session continues on a new connection (netchan-kind: resume). */
  private handleResume(stream: ServerStream, headers: StreamHeaders, sid: string): void {
    const peerIn = Number(header(headers, Headers.framesReceived));
    const fs = this.framedBySid.get(sid);
    if (!Number.isSafeInteger(peerIn) || peerIn < 0) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'bad netchan-frames-received');
    if (!fs || !fs.suspendNow()) return refuse(stream, 404, ErrorCodes.UNKNOWN_REFERENCE, `no channel stream ${sid} to resume in this session`);
    // for a channel this side owns, the answer to the opening too (the first may have been lost)
    const ex = this.exporters.get(sid);
    stream.respond({
      [HTTP2_HEADER_STATUS]: 200,
      [Headers.framesReceived]: String(fs.framesIn),
      ...(ex ? { [Headers.capacity]: String(ex.channel.capacity), [Headers.credit]: String(ChannelExporter.initialCredits(ex.channel)) } : {}),
    });
    this.track(stream);
    try {
      fs.resume(stream, peerIn);
      // a frame even when there is nothing to replay, so that a proxy passes the answer on (§4.5)
      fs.countFrame(ex ? FrameType.ACK : FrameType.CREDIT, 0);
    } catch (err) {
      fs.abandon(err as NetchanError);
      resetStream(stream, undefined, http2.constants.NGHTTP2_PROTOCOL_ERROR);
    }
  }

  /** Ends the session: every stream of it goes. */
  end(error: NetchanError, graceful = false): void {
    if (this.ended) return;
    debug('session %s ends: %s', this.id, error.message);
    if (this.idleTimer) clearInterval(this.idleTimer);
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    for (const p of this.pendingExports.values()) clearTimeout(p.timer);
    this.counters.pendingReferences -= this.pendingExports.size;
    this.pendingExports.clear();
    for (const u of this.unclaimed.values()) this.dropUnclaimed(u);
    this.unclaimed.clear();
    if (graceful) this.teardown(error, true);
    this.control?.end();
    this.teardown(error);
    this.server.forgetSession(this);
  }

  /** A channel or byte stream stream of this session arrived. */
  handle(stream: ServerStream, headers: StreamHeaders): void {
    const kind = header(headers, Headers.kind);
    const sid = header(headers, Headers.stream);
    if (!sid || sid.length > 64) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'missing or bad netchan-stream header');
    if (kind === 'channel') return this.handleChannel(stream, headers, sid);
    if (kind === 'resume') return this.handleResume(stream, headers, sid);
    if (kind === 'bytes') return this.handleBytes(stream, headers, sid);
    if (kind === 'tcp') return this.handleTcp(stream, headers);
    refuse(stream, 400, ErrorCodes.PROTOCOL, `unknown netchan-kind ${String(kind)}`);
  }

  private handleChannel(stream: ServerStream, headers: StreamHeaders, sid: string): void {
    if (this.exporters.size + this.remotes.size >= this.server.limits.maxChannelsPerSession) {
      return this.refuseLimit(stream, sid, `this session has ${this.server.limits.maxChannelsPerSession} channel streams open, the limit`);
    }
    const name = header(headers, Headers.name);
    const ref = header(headers, Headers.ref);
    const exported = header(headers, Headers.exportRef);
    if (exported !== undefined) {
      // the client owns this channel; we get a handle, claimed when a value names it
      if (exported !== sid) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'netchan-export must equal netchan-stream');
      const capacity = Number(header(headers, Headers.capacity) ?? 0);
      const credits = Number(header(headers, Headers.credit) ?? 1);
      if (!Number.isInteger(capacity) || capacity < 0 || !Number.isInteger(credits) || credits < 1) {
        return refuse(stream, 400, ErrorCodes.PROTOCOL, 'bad netchan-capacity or netchan-credit');
      }
      stream.respond({ [HTTP2_HEADER_STATUS]: 200 });
      this.track(stream);
      const rc = this.attachRemote(this.framed(stream), sid);
      rc.open({ capacity, credits });
      this.addUnclaimed(sid, 'channel', rc);
      this.announce(sid);
      return;
    }
    let channel: ExportableChannel | undefined;
    if (name !== undefined) {
      channel = this.server.lookup(name, this);
      if (!channel) return refuse(stream, 404, ErrorCodes.UNKNOWN_CHANNEL, `no channel named ${JSON.stringify(name)}`);
      if (!this.server.allows(this.principal, name)) {
        return refuse(stream, 403, ErrorCodes.UNAUTHORIZED, `principal may not use channel ${JSON.stringify(name)}`);
      }
    } else if (ref !== undefined) {
      const p = this.takePending(ref, 'channel');
      if (!p) return refuse(stream, 404, ErrorCodes.UNKNOWN_REFERENCE, `no channel reference ${ref} in this session`);
      channel = p.obj as ExportableChannel;
    } else {
      return refuse(stream, 400, ErrorCodes.PROTOCOL, 'channel stream names no channel');
    }
    if (this.exporters.has(sid)) return refuse(stream, 400, ErrorCodes.PROTOCOL, `stream id ${sid} already in use`);
    stream.respond({
      [HTTP2_HEADER_STATUS]: 200,
      [Headers.capacity]: String(channel.capacity),
      [Headers.credit]: String(ChannelExporter.initialCredits(channel)),
    });
    this.track(stream);
    const fs = this.framed(stream);
    this.attachExporter(fs, channel, sid);
    // The client waits for this answer (capacity, credits) before it sends; an ACK of 0 puts
    // data right behind it for proxies that hold HEADERS until DATA follows (§5.2).
    fs.countFrame(FrameType.ACK, 0);
  }

  private handleBytes(stream: ServerStream, headers: StreamHeaders, sid: string): void {
    if (this.openByteStreams >= this.server.limits.maxByteStreamsPerSession) {
      return this.refuseLimit(stream, sid, `this session has ${this.server.limits.maxByteStreamsPerSession} byte streams open, the limit`);
    }
    const ref = header(headers, Headers.ref);
    const exported = header(headers, Headers.exportRef);
    if (exported !== undefined) {
      const mode = header(headers, Headers.mode);
      if (exported !== sid || (mode !== 'r' && mode !== 'w' && mode !== 'd')) {
        return refuse(stream, 400, ErrorCodes.PROTOCOL, 'bad byte-stream export headers');
      }
      // the client's Readable arrives as our request body; its Writable is fed by our response
      stream.respond({ [HTTP2_HEADER_STATUS]: 200 });
      // Nothing flows to a Readable, but the response ends only after the request body: proxies
      // (nginx grpc_pass, Caddy) stop forwarding a request body once its response is complete.
      if (mode === 'r') stream.once('end', () => stream.end());
      if (mode === 'w') stream.resume();
      // Node dumps a server stream's unread body once both sides have ended, unless it was
      // read from: a short upload can end before its value is decoded.
      else stream.read(0);
      this.track(stream);
      this.trackBytes(stream);
      this.addUnclaimed(sid, 'bytes', stream, mode);
      this.announce(sid);
      return;
    }
    if (ref === undefined) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'byte stream names no reference');
    const p = this.takePending(ref, 'bytes');
    if (!p) return refuse(stream, 404, ErrorCodes.UNKNOWN_REFERENCE, `no byte-stream reference ${ref} in this session`);
    stream.respond({ [HTTP2_HEADER_STATUS]: 200 });
    this.track(stream);
    this.trackBytes(stream);
    joinBytes(p.obj, stream, p.mode as BytesMode, 'server');
  }

  /** A TCP connection through the gateway (docs/PROTOCOL.md §8, lib/gateway.ts). */
  private handleTcp(stream: ServerStream, headers: StreamHeaders): void {
    const gateway = this.server.tcpGateway;
    if (!gateway) return refuse(stream, 403, ErrorCodes.FORBIDDEN_TARGET, 'this server is not a TCP gateway');
    this.track(stream);
    gateway.handle(stream, headers, { sessionId: this.id, principal: this.principal, nudge: () => this.control?.frame(FrameType.PING, randomBytes(8)) });
  }

  /**
   * Refuses a stream over a limit (429, ERR_LIMIT). If it was an export, a value naming it fails
   * with the same error at once instead of waiting for a stream that will not come.
   */
  private refuseLimit(stream: ServerStream, sid: string, message: string): void {
    refuse(stream, 429, ErrorCodes.LIMIT, message);
    if (this.refused.size >= 1024) this.refused.delete(this.refused.keys().next().value as string);
    this.refused.set(sid, message);
    this.announce(sid);
  }

  /**
   * Keeps an exported stream until a value names it. Not forgotten when the stream closes: a
   * short byte stream can be complete (and closed by HTTP/2) before its value is decoded, with
   * its bytes still buffered; a channel can be closed with values still to drain.
   */
  private addUnclaimed(sid: string, kind: 'channel' | 'bytes', obj: object, mode?: BytesMode): void {
    const timer = setTimeout(() => {
      const u = this.unclaimed.get(sid);
      if (!u) return;
      this.unclaimed.delete(sid);
      debug('session %s: exported stream %s never named by a value, dropped', this.id, sid);
      this.dropUnclaimed(u);
    }, this.referenceTimeoutMs);
    timer.unref();
    this.unclaimed.set(sid, { kind, obj, mode, timer });
  }

  private claim(id: string, kind: 'channel' | 'bytes', mode?: BytesMode): object | undefined {
    const u = this.unclaimed.get(id);
    if (!u) {
      const refused = this.refused.get(id);
      if (refused !== undefined) {
        this.refused.delete(id);
        throw netchanError(ErrorCodes.LIMIT, `stream ${id} was refused: ${refused}`);
      }
      return undefined;
    }
    if (u.kind !== kind || u.mode !== mode) {
      throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `stream ${id} is not a ${kind === 'channel' ? 'channel' : `byte stream of mode ${mode}`}`);
    }
    this.unclaimed.delete(id);
    clearTimeout(u.timer);
    return u.obj;
  }

  private dropUnclaimed(u: Unclaimed): void {
    clearTimeout(u.timer);
    if (u.kind === 'channel') (u.obj as { release(): void }).release();
    else resetStream(u.obj as Duplex);
  }

  private takePending(ref: string, kind: 'channel' | 'bytes'): PendingExport | undefined {
    const p = this.pendingExports.get(ref);
    if (!p || p.kind !== kind) return undefined;
    this.pendingExports.delete(ref);
    this.counters.pendingReferences--;
    clearTimeout(p.timer);
    return p;
  }

  private addPending(kind: 'channel' | 'bytes', obj: object, mode?: BytesMode): string {
    const id = `s${this.nextRef++}`;
    const timer = setTimeout(() => {
      if (this.pendingExports.delete(id)) {
        this.counters.pendingReferences--;
        debug('session %s: reference %s never opened, dropped', this.id, id);
        if (kind === 'bytes') (obj as Duplex).destroy?.(netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'byte-stream reference never opened'));
      }
    }, this.server.pendingReferenceTimeoutMs);
    timer.unref();
    this.pendingExports.set(id, { kind, obj, mode, timer });
    this.counters.pendingReferences++;
    return id;
  }

  protected exportChannel(ch: ExportableChannel): Record<string, unknown> {
    return { o: 's', id: this.addPending('channel', ch) };
  }

  protected exportBytes(obj: object, mode: BytesMode): Record<string, unknown> {
    return { o: 's', id: this.addPending('bytes', obj, mode), m: mode };
  }

  protected importChannel(owner: 'c' | 's', id: string): unknown {
    if (owner !== 'c') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'a client cannot name a server-owned reference');
    return this.claim(id, 'channel') ?? this.waitFor(id);
  }

  protected importBytes(owner: 'c' | 's', id: string, mode: BytesMode): unknown {
    if (owner !== 'c') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'a client cannot name a server-owned reference');
    return this.claim(id, 'bytes', mode) ?? this.waitFor(id);
  }
}

/**
 * A netchan server. Export channels with {@link NetchanServer.channel}, then `listen`, or mount
 * it on an existing app (`netchan/express`).
 */
export class NetchanServer {
  /** The `node:http2` server handling HTTP/2 connections, once `listen` created it. */
  http2Server: http2.Http2Server | null = null;
  /** The listening server (TLS, or plain TCP when `insecure`), once `listen` created it. */
  listener: net.Server | null = null;
  readonly path: string;
  /** @internal */
  readonly statsRef: Stats = emptyStats();
  /** @internal */
  readonly pendingReferenceTimeoutMs: number;
  /** The limits in force (the options, or their defaults). */
  readonly limits: { maxChannelsPerSession: number; maxByteStreamsPerSession: number; maxSessionsPerPrincipal: number };
  private readonly channels = new Map<string, ExportableChannel>();
  private readonly sessions = new Map<string, ServerSession>();
  private readonly sessionsByPrincipal = new Map<string, number>();
  private readonly heartbeatIntervalMs: number;
  private readonly idleTimeoutMs: number;
  private readonly sessionLeaseMs: number;
  private readonly h2Sessions = new Set<http2.ServerHttp2Session>();
  private readonly muxes = new Set<WsMux>();
  private readonly sockets = new Set<net.Socket>();
  private readonly h2Sockets = new WeakSet<net.Socket>();
  private wss: WebSocketServer | null = null;
  private gatewayHandler: Gateway | null = null;

  constructor(private readonly options: ServerOptions = {}) {
    this.path = options.path ?? '/';
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 15_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
    this.pendingReferenceTimeoutMs = options.pendingReferenceTimeoutMs ?? 60_000;
    this.sessionLeaseMs = options.sessionLeaseMs ?? 10_000;
    this.limits = {
      maxChannelsPerSession: options.maxChannelsPerSession ?? DEFAULT_LIMITS.maxChannelsPerSession,
      maxByteStreamsPerSession: options.maxByteStreamsPerSession ?? DEFAULT_LIMITS.maxByteStreamsPerSession,
      maxSessionsPerPrincipal: options.maxSessionsPerPrincipal ?? DEFAULT_LIMITS.maxSessionsPerPrincipal,
    };
  }

  /**
   * Exports a channel under `name`: a new `Channel` of the given capacity, or the one given.
   * Clients reach it with `session.channel(name)`.
   */
  channel<T>(name: string, capacityOrChannel: number | Channel<T> = 0): Channel<T> {
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'channel name must be a string of 1 to 256 characters');
    }
    const ch = typeof capacityOrChannel === 'number' ? new Channel<T>(capacityOrChannel) : capacityOrChannel;
    this.channels.set(name, ch as Channel<unknown>);
    return ch;
  }

  /** Stops exporting `name` (streams already open keep their channel). */
  unexport(name: string): boolean {
    return this.channels.delete(name);
  }

  /** @internal */
  lookup(name: string, _session: ServerSession): ExportableChannel | undefined {
    return this.channels.get(name);
  }

  /** @internal the policy's answer (see {@link ServerOptions.authorize}); a throwing policy denies */
  allows(principal: string, channel: string): boolean {
    const policy = this.options.authorize;
    if (!policy) return true;
    try {
      return policy({ principal, channel }) === true;
    } catch (err) {
      debug('authorize threw: %s', (err as Error).message);
      return false;
    }
  }

  /**
   * Makes this server a TCP gateway (docs/gateway.md): its clients may then open TCP connections
   * (`session.dialTcp`, `session.forward`) to the targets `options.allow` permits, and to nothing
   * else. Calling it again replaces the policy (connections already open stay).
   */
  gateway(options: GatewayOptions): Gateway {
    this.gatewayHandler = new Gateway(options, this.statsRef);
    return this.gatewayHandler;
  }

  /** @internal the gateway, once {@link gateway} enabled it */
  get tcpGateway(): Gateway | null {
    return this.gatewayHandler;
  }

  /**
   * @internal the principal of a standalone server's stream or upgrade: what `authenticate` says
   * (undefined: refused, and audited when the server is a gateway), else the mTLS principal.
   */
  authenticated(headers: StreamHeaders, socket: unknown): string | undefined {
    const principal = principalFromSocket(socket);
    const authenticate = this.options.authenticate;
    if (!authenticate) return principal;
    let result: string | false | undefined;
    try {
      result = authenticate({ headers, principal });
    } catch (err) {
      debug('authenticate threw: %s', (err as Error).message);
    }
    if (typeof result === 'string') return result;
    this.gatewayHandler?.auditUnauthorized({
      remoteAddress: (socket as { remoteAddress?: string } | undefined)?.remoteAddress,
      target: header(headers, TARGET_HEADER),
      message: 'not authenticated',
    });
    return undefined;
  }

  /** Counters: sessions, streams, channels, byte streams, values and bytes in/out. */
  stats(): Stats {
    const stats = { ...this.statsRef, sessions: this.sessions.size };
    // connections through the gateway count their bytes as they go
    if (this.gatewayHandler) {
      const live = this.gatewayHandler.liveBytes();
      stats.tcpBytesIn += live.fromTargets;
      stats.tcpBytesOut += live.toTargets;
    }
    return stats;
  }

  /**
   * Handles one netchan stream from any HTTP/2 server (the Express adapter calls this) or from a
   * WebSocket mux. The caller has decided the stream belongs to netchan and who its principal is.
   */
  handleStream(stream: ServerStream, headers: StreamHeaders, info: StreamContextInfo = {}): void {
    // reset or cut off before it got here (the app's middleware may have taken its time): there
    // is no one to answer, and nothing may be written to it
    if (stream.destroyed || stream.closed) return;
    const principal = info.principal ?? '';
    if (header(headers, HTTP2_HEADER_METHOD) !== 'POST') return refuse(stream, 405, ErrorCodes.PROTOCOL, 'netchan streams use POST');
    const version = header(headers, Headers.version);
    if (version !== PROTOCOL_VERSION) return refuse(stream, 400, ErrorCodes.PROTOCOL, `unsupported netchan-version ${String(version)}`);
    const kind = header(headers, Headers.kind);
    if (kind === 'session' && header(headers, Headers.session) !== undefined) {
      // resuming a session on a new connection
      const session = this.sessions.get(header(headers, Headers.session) as string);
      if (!session || session.leaseMs === 0) return refuse(stream, 404, ErrorCodes.UNKNOWN_SESSION, 'no such session to resume');
      if (session.principal !== principal) return refuse(stream, 403, ErrorCodes.UNAUTHORIZED, 'stream presents another principal than its session');
      session.resumeControl(stream, this.idleTimeoutMs, this.sessionHeaders(session));
      return;
    }
    if (kind === 'session') {
      const held = this.sessionsByPrincipal.get(principal) ?? 0;
      if (principal !== '' && held >= this.limits.maxSessionsPerPrincipal) {
        return refuse(stream, 429, ErrorCodes.LIMIT, `principal has ${held} sessions open, the limit`);
      }
      const lease = header(headers, Headers.resumable) === '1' ? this.sessionLeaseMs : 0;
      const session = new ServerSession(this, principal, this.options, lease);
      this.sessions.set(session.id, session);
      this.sessionsByPrincipal.set(principal, held + 1);
      stream.respond(this.sessionHeaders(session));
      session.attachControl(stream, this.idleTimeoutMs);
      return;
    }
    const sessionId = header(headers, Headers.session);
    const session = sessionId ? this.sessions.get(sessionId) : undefined;
    if (!session) return refuse(stream, 404, ErrorCodes.UNKNOWN_SESSION, 'no such session');
    if (session.principal !== principal) {
      return refuse(stream, 403, ErrorCodes.UNAUTHORIZED, 'stream presents another principal than its session');
    }
    session.handle(stream, headers);
  }

  /**
   * Takes over an HTTP/1.1 upgrade request for the WebSocket fallback (docs/PROTOCOL.md §7): all
   * streams of the mux get `info.principal`. The caller (the standalone server, or the Express
   * middleware after the app's auth) decided the request is netchan's.
   */
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, info: StreamContextInfo = {}): void {
    const reject = (status: number, code: string, message: string): void => {
      socket.end(
        `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: text/plain\r\n` +
          `${Headers.error}: ${code}\r\n${Headers.message}: ${message}\r\n\r\n${code}: ${message}\n`,
      );
    };
    if (req.headers[Headers.version] !== PROTOCOL_VERSION) return reject(400, ErrorCodes.PROTOCOL, `unsupported netchan-version ${String(req.headers[Headers.version])}`);
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return reject(426, ErrorCodes.PROTOCOL, 'netchan over HTTP/1.1 needs a WebSocket upgrade');
    const offered = String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.includes(WS_SUBPROTOCOL)) return reject(400, ErrorCodes.PROTOCOL, `WebSocket subprotocol ${WS_SUBPROTOCOL} required`);
    (socket as net.Socket).setNoDelay?.(true);
    this.wss ??= new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: MUX_MAX_MESSAGE,
      handleProtocols: (protocols) => (protocols.has(WS_SUBPROTOCOL) ? WS_SUBPROTOCOL : false),
    });
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const mux = new WsMux(ws, 'server');
      this.muxes.add(mux);
      mux.on('close', () => this.muxes.delete(mux));
      mux.on('error', (err: Error) => debug('WebSocket mux error: %s', err.message));
      mux.on('stream', (stream: ServerStream, headers: StreamHeaders) => {
        stream.on('error', (err) => debug('mux stream error: %s', err.message));
        this.serve(stream, headers, info);
      });
    });
  }

  /**
   * {@link handleStream} for the server's own transports, where nothing above would catch what
   * it throws: one stream's failure must not end the process, so the stream is reset instead.
   */
  private serve(stream: ServerStream, headers: StreamHeaders, info: StreamContextInfo): void {
    try {
      this.handleStream(stream, headers, info);
    } catch (err) {
      debug('stream handling failed: %s', (err as Error).stack ?? err);
      resetStream(stream, fromNodeError(err, ErrorCodes.PROTOCOL));
    }
  }

  private sessionHeaders(session: ServerSession): Record<string, string | number> {
    return {
      [HTTP2_HEADER_STATUS]: 200,
      [Headers.session]: session.id,
      [Headers.heartbeatMs]: String(this.heartbeatIntervalMs),
      [Headers.maxFrameBytes]: String(this.options.maxFrameBytes ?? 1024 * 1024),
      ...(session.leaseMs > 0 ? { [Headers.leaseMs]: String(session.leaseMs) } : {}),
    };
  }

  /** @internal */
  forgetSession(session: ServerSession): void {
    if (!this.sessions.delete(session.id)) return;
    const held = (this.sessionsByPrincipal.get(session.principal) ?? 1) - 1;
    if (held > 0) this.sessionsByPrincipal.set(session.principal, held);
    else this.sessionsByPrincipal.delete(session.principal);
  }

  /**
   * Starts a standalone server: TLS 1.3 (or plaintext with `insecure`) on `port` and `host`, or
   * on a unix socket when `port` is a path. HTTP/2 connections (ALPN `h2`, or the h2c preface)
   * carry sessions directly; HTTP/1.1 ones may upgrade to the WebSocket fallback. Resolves to the
   * bound address (`port` 0 picks a free one).
   */
  listen(port: number | string = 0, host = '127.0.0.1'): Promise<AddressInfo> {
    const { key, cert, ca, requestCert, insecure } = this.options;
    if (!insecure && (!key || !cert)) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'listen needs key and cert (or insecure: true for plaintext on loopback or behind a TLS-terminating proxy)');
    }
    const h2 = http2.createServer({ settings: { initialWindowSize: 1024 * 1024, maxConcurrentStreams: 10_000 } });
    this.http2Server = h2;
    h2.on('session', (s) => {
      this.h2Sessions.add(s);
      s.once('close', () => this.h2Sessions.delete(s));
      s.on('error', (err) => debug('http2 session error: %s', err.message));
      s.once('remoteSettings', () => s.setLocalWindowSize(32 * 1024 * 1024));
    });
    h2.on('stream', (stream, headers) => {
      stream.on('error', (err) => debug('stream error: %s', err.message));
      if (!this.isOurPath(header(headers, HTTP2_HEADER_PATH))) return refuse(stream, 404, ErrorCodes.NOT_FOUND, 'not a netchan endpoint');
      const principal = this.authenticated(headers, stream.session?.socket);
      if (principal === undefined) return refuse(stream, 401, ErrorCodes.UNAUTHORIZED, 'not authenticated');
      this.serve(stream, headers, { principal });
    });
    // HTTP/1.1 connections: only the WebSocket upgrade is served
    const h1 = http.createServer((req, res) => {
      const ours = this.isOurPath(req.url) && req.headers[Headers.version] !== undefined;
      const [status, code, message] = ours
        ? [426, ErrorCodes.PROTOCOL, 'netchan over HTTP/1.1 needs a WebSocket upgrade']
        : [404, ErrorCodes.NOT_FOUND, 'not a netchan endpoint'];
      res.writeHead(status, { 'content-type': 'text/plain', [Headers.error]: code, [Headers.message]: message, ...(ours ? { upgrade: 'websocket' } : {}) });
      res.end(`${code}: ${message}\n`);
    });
    h1.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', (err) => debug('upgrade socket error: %s', err.message));
      if (!this.isOurPath(req.url)) {
        socket.end(`HTTP/1.1 404 Not Found\r\nconnection: close\r\n${Headers.error}: ${ErrorCodes.NOT_FOUND}\r\n\r\n`);
        return;
      }
      const principal = this.authenticated(req.headers, socket);
      if (principal === undefined) {
        socket.end(`HTTP/1.1 401 Unauthorized\r\nconnection: close\r\n${Headers.error}: ${ErrorCodes.UNAUTHORIZED}\r\n${Headers.message}: not authenticated\r\n\r\n`);
        return;
      }
      this.handleUpgrade(req, socket, head, { principal });
    });
    const route = (socket: net.Socket, isH2: boolean): void => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
      // Acks and credits are small writes that must not wait for Nagle's algorithm.
      socket.setNoDelay(true);
      if (isH2) this.h2Sockets.add(socket);
      (isH2 ? h2 : h1).emit('connection', socket);
      // the HTTP/1.1 parser reads what sniffing put back only once the socket flows again
      if (!isH2 && socket.isPaused()) socket.resume();
    };
    let listener: net.Server;
    if (insecure) {
      // h2c with prior knowledge starts with the HTTP/2 preface; anything else is HTTP/1.1
      listener = net.createServer((socket) => {
        socket.on('error', (err) => debug('socket error: %s', err.message));
        sniffPreface(socket, (isH2) => route(socket, isH2));
      });
    } else {
      listener = tls.createServer(
        {
          key,
          cert,
          ca,
          requestCert: requestCert ?? false,
          rejectUnauthorized: requestCert ?? false,
          minVersion: 'TLSv1.3',
          ALPNProtocols: ['h2', 'http/1.1'],
        },
        (socket) => route(socket, socket.alpnProtocol === 'h2'),
      );
      listener.on('tlsClientError', (err) => debug('TLS client error: %s', err.message));
    }
    this.listener = listener;
    return new Promise((resolve, reject) => {
      listener.once('error', reject);
      const done = () => {
        listener.off('error', reject);
        const address = listener.address();
        resolve(typeof address === 'string' ? ({ address, family: 'unix', port: 0 } as AddressInfo) : (address as AddressInfo));
      };
      if (typeof port === 'string') listener.listen(port, done);
      else listener.listen(port, host, done);
    });
  }

  private isOurPath(url: string | undefined): boolean {
    return (url ?? '').split('?')[0] === this.path;
  }

  /** Ends every session and stops listening. */
  async close(): Promise<void> {
    this.gatewayHandler?.close();
    for (const session of [...this.sessions.values()]) session.end(netchanError(ErrorCodes.SESSION_CLOSED, 'server closing'));
    for (const mux of this.muxes) mux.close();
    const listener = this.listener;
    if (!listener) return;
    await new Promise<void>((resolve) => {
      listener.close(() => resolve());
      // close() waits for connections; ask them to go. Not at once: closing a session with no
      // stream left destroys it, which must not happen inside nghttp2's receive (close() may be
      // called there, lib/stream-reset.ts).
      setImmediate(() => {
        for (const s of this.h2Sessions) s.close();
      });
      for (const mux of this.muxes) mux.destroy();
      for (const socket of this.sockets) if (!this.h2Sockets.has(socket)) socket.destroy();
      setTimeout(() => {
        for (const socket of this.sockets) socket.destroy();
      }, 2000).unref();
    });
  }
}

/** Reads the first bytes of a plaintext connection to tell h2c (the HTTP/2 preface) from HTTP/1.1. */
function sniffPreface(socket: net.Socket, decide: (isH2: boolean) => void): void {
  const preface = Buffer.from('PRI * HTTP/2.0');
  let seen = Buffer.alloc(0);
  const onData = (chunk: Buffer): void => {
    seen = Buffer.concat([seen, chunk]);
    const n = Math.min(seen.length, preface.length);
    const isH2 = seen.subarray(0, n).equals(preface.subarray(0, n));
    if (isH2 && n < preface.length) return;
    socket.off('data', onData);
    socket.pause();
    socket.unshift(seen);
    decide(isH2);
  };
  socket.on('data', onData);
}

function principalFromSocket(socket: unknown): string {
  const s = socket as { authorized?: boolean; getPeerCertificate?: () => { subject?: { CN?: string } } } | undefined;
  if (s?.authorized && typeof s.getPeerCertificate === 'function') {
    const cn = s.getPeerCertificate()?.subject?.CN;
    if (cn) return `cert:${cn}`;
  }
  return '';
}

/** Creates a netchan server. See {@link ServerOptions}. */
export function createServer(options: ServerOptions = {}): NetchanServer {
  return new NetchanServer(options);
}
