/**
 * The server: exports named channels, accepts sessions and their streams. The streams come from
 * a standalone `node:http2` secure server (`listen`) or from an existing app (`handleStream`,
 * used by the Express adapter). The server never opens a stream.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { PassThrough, type Duplex } from 'node:stream';
import tls from 'node:tls';
import { WebSocketServer } from 'ws';
import { Channel } from '../core/channel.js';
import { ChannelExporter, RemoteChannel, sendWindow, type ExportableChannel, type RemoteEndpoint } from '../session/channel-stream.js';
import { ServerConnection } from '../transport/connections.js';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import { FrameType } from '../wire/frames.js';
import type { FramedStream } from '../session/framed-stream.js';
import { CollectionTrigger } from '../session/collector.js';
import { Gateway, TARGET_HEADER, type GatewayOptions } from '../gateway/gateway.js';
import type { ReferenceKind } from '../wire/codec.js';
import { DEFAULT_MAX_CHANNELS, Headers, PROTOCOL_VERSION, SessionCore, debug, joinBytes, newSessionId, type BytesMode, type ExportPlan, type ParsedReference, type SessionOptions } from '../session/session.js';
import { emptyStats, type Stats } from '../session/stream-context.js';
import { resetStream } from '../transport/stream-reset.js';
import type { ServerStream } from '../transport/connect.js';
import { MUX_MAX_MESSAGE, MuxStream, WS_SUBPROTOCOL, WsMux } from '../transport/ws-mux.js';

const {
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_PATH,
  NGHTTP2_NO_ERROR,
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
  /**
   * Channel streams one session may have open at once (named, exported, references). Default 4096.
   * Advertised to clients (`netchan-max-channels`), which refuse an export over it with ERR_LIMIT
   * on the send. A remote handle counts until it is closed and drained, released, or dropped by
   * the program and collected.
   */
  maxChannelsPerSession?: number;
  /** Byte streams one session may have open at once. Default 1024. */
  maxByteStreamsPerSession?: number;
  /**
   * Sessions one authenticated principal may have open at once. Default 256. Anonymous sessions
   * (principal `''`) are not counted against it.
   */
  maxSessionsPerPrincipal?: number;
  /**
   * Anonymous sessions (principal `''`) the whole server may have open at once; one more is
   * refused with `429 ERR_LIMIT`. Default 16384.
   */
  maxAnonymousSessions?: number;
  /**
   * Anonymous sessions on one connection that have no stream open besides their control stream;
   * a new anonymous session over it is refused with `429 ERR_LIMIT`. Default 64. Counted by
   * connection but only while unused, so a proxy that multiplexes many users over one upstream
   * connection is not held to it once their sessions open channels.
   */
  maxUnusedAnonymousSessionsPerConnection?: number;
  /**
   * An anonymous session that has no stream open besides its control stream this long is ended
   * (`ERR_TIMEOUT`), in ms. Default 60000; 0 disables. Sessions of an authenticated principal are
   * bounded by `maxSessionsPerPrincipal` instead and never end for this.
   */
  unusedAnonymousSessionTimeoutMs?: number;
  /**
   * A TLS connection that has not completed its handshake this long after it was accepted is
   * closed, in ms. Default 10000; 0 disables. Standalone server (`listen`) only: under Express
   * the app's own server sets it (`handshakeTimeout` of `http2.createSecureServer`).
   */
  handshakeTimeoutMs?: number;
  /**
   * A connection that has not sent its first request this long after it was accepted (after the
   * TLS handshake) is closed, in ms: the HTTP/2 preface (h2c included) and a first stream, or an
   * HTTP/1.1 request such as the WebSocket upgrade. Default 10000; 0 disables. Standalone server
   * only: under Express the app's own server's timeouts apply.
   */
  firstRequestTimeoutMs?: number;
  /**
   * A connection that carries no stream of a live session this long is closed, in ms: one whose
   * first stream was refused, or whose last session ended or timed out. HTTP/2 connections get a
   * GOAWAY, WebSocket ones a close, and either is dropped a second later. Default 30000; 0
   * disables. Under Express it applies to WebSocket connections and to HTTP/2 connections that
   * carried netchan streams only (any stream of the app's own leaves the connection to the app).
   */
  noSessionTimeoutMs?: number;
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
  maxChannelsPerSession: DEFAULT_MAX_CHANNELS,
  maxByteStreamsPerSession: 1024,
  maxSessionsPerPrincipal: 256,
  maxAnonymousSessions: 16384,
  maxUnusedAnonymousSessionsPerConnection: 64,
} as const;

/** Defaults of the connection and anonymous-session timeouts in {@link ServerOptions}, in ms. */
export const DEFAULT_TIMEOUTS = {
  handshakeTimeoutMs: 10_000,
  firstRequestTimeoutMs: 10_000,
  noSessionTimeoutMs: 30_000,
  unusedAnonymousSessionTimeoutMs: 60_000,
} as const;

/** The limits in force on a server: its options, or their defaults. */
export type Limits = { -readonly [K in keyof typeof DEFAULT_LIMITS]: number };
/** The timeouts in force on a server: its options, or their defaults. */
export type Timeouts = { -readonly [K in keyof typeof DEFAULT_TIMEOUTS]: number };

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
  // A client may never end its side of a refused stream, which would keep it open on the server
  // for the life of the connection: once the answer is out it is let go (RST_STREAM NO_ERROR
  // after END_STREAM, RFC 9113 §8.1; a mux RESET after END, a release, PROTOCOL §7.2). From the
  // next turn: an HTTP/2 reset other than CANCEL must not be asked for inside nghttp2's receive
  // (lib/transport/stream-reset.ts); close() sends it once the answer is written.
  setImmediate(() => {
    if (!stream.destroyed && !stream.closed) stream.close(NGHTTP2_NO_ERROR);
  });
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
  /** Stream ids of this session's streams open now (docs/PROTOCOL.md §4: unique in the session). */
  private readonly openSids = new Set<string>();
  /** The stream id each arriving stream names, until it is tracked. */
  private readonly sidOf = new WeakMap<Duplex, string>();
  /** What a tracked stream must let go of when it closes. */
  private readonly closing = new WeakMap<Duplex, { connection: ServerConnection | undefined; sid: string | undefined }>();
  private control: FramedStream | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  private lastFrameAt = Date.now();
  /** The connection that carries the control stream now. */
  private connection: ServerConnection | undefined;
  private controlStream: ServerStream | null = null;
  /** Anonymous, and nothing but the control stream open: counted on the connection, timed. */
  private unused = false;
  private unusedTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly server: NetchanServer,
    readonly principal: string,
    options: ServerOptions,
    /** The lease agreed with the client (0: not resumable). */
    readonly leaseMs = 0,
  ) {
    super(newSessionId(), server.statsRef, options);
    this.resumable = leaseMs > 0;
    // no more streams than the session may have open can ever arrive for its values
    this.maxWaitingReferences = server.limits.maxChannelsPerSession + server.limits.maxByteStreamsPerSession;
    this.collection = new CollectionTrigger(server.limits.maxChannelsPerSession);
  }

  /** True while the session waits for its client to resume it. */
  get detached(): boolean {
    return this.leaseTimer !== null;
  }

  /** Binds the control stream: heartbeats arrive here; its end is the session's end. */
  attachControl(stream: ServerStream, idleTimeoutMs: number): void {
    const fs = this.framed(stream);
    this.control = fs;
    this.controlStream = stream;
    this.setUnused(false);
    this.connection = ServerConnection.ofStream(stream);
    this.lastFrameAt = Date.now();
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = null;
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.track(fs.stream);
    const current = () => this.control === fs;
    fs.setSink({
      onFrame: (type, payload) => {
        this.lastFrameAt = Date.now();
        // A peer that sends PINGs and reads nothing would have its PONGs pile up here without
        // end: while the stream's write buffer is full, a PING counts as life but gets no answer.
        if (type === FrameType.PING && !fs.congested) fs.frame(FrameType.PONG, payload);
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
    this.controlStream = null;
    this.setUnused(false);
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
      ...(ex ? { [Headers.capacity]: String(ex.channel.capacity), [Headers.credit]: String(ex.sendCredits) } : {}),
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
    this.setUnused(false);
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

  /** A stream of this session counts on its connection too: a connection with a live stream stays open. */
  protected override tracked(stream: Duplex): void {
    const connection = ServerConnection.ofStream(stream);
    connection?.streamOpened();
    const sid = this.sidOf.get(stream);
    if (sid !== undefined) this.openSids.add(sid);
    // a closed HTTP/2 stream has let go of its session: remember the connection for untracked()
    this.closing.set(stream, { connection, sid });
    this.watchUse();
  }

  protected override untracked(stream: Duplex): void {
    const { connection, sid } = this.closing.get(stream) ?? {};
    connection?.streamClosed();
    if (sid !== undefined) this.openSids.delete(sid);
    this.watchUse();
  }

  /**
   * An anonymous session with nothing but its control stream open is unused: bounded per
   * connection (`maxUnusedAnonymousSessionsPerConnection`) and ended after
   * `unusedAnonymousSessionTimeoutMs` (docs/PROTOCOL.md §4.3).
   */
  private watchUse(): void {
    if (this.principal !== '' || this.ended) return;
    const control = this.controlStream;
    const others = this.streams.size - (control && this.streams.has(control) ? 1 : 0);
    this.setUnused(control !== null && others === 0);
  }

  private setUnused(unused: boolean): void {
    if (unused === this.unused) return;
    this.unused = unused;
    if (this.connection) this.connection.unusedAnonymousSessions += unused ? 1 : -1;
    if (this.unusedTimer) clearTimeout(this.unusedTimer);
    this.unusedTimer = null;
    const ms = this.server.timeouts.unusedAnonymousSessionTimeoutMs;
    if (!unused || ms <= 0) return;
    this.unusedTimer = setTimeout(() => this.end(netchanError(ErrorCodes.TIMEOUT, `anonymous session with no stream open for ${ms} ms`)), ms);
    this.unusedTimer.unref();
  }

  /** A channel or byte stream stream of this session arrived. */
  handle(stream: ServerStream, headers: StreamHeaders): void {
    const kind = header(headers, Headers.kind);
    const sid = header(headers, Headers.stream);
    if (!sid || sid.length > 64) return refuse(stream, 400, ErrorCodes.PROTOCOL, 'missing or bad netchan-stream header');
    if (kind === 'resume') return this.handleResume(stream, headers, sid);
    if (this.inUse(sid)) return refuse(stream, 400, ErrorCodes.PROTOCOL, `stream id ${sid} reused in this session`);
    // taken once the stream is accepted (tracked); a refused stream leaves its id free
    this.sidOf.set(stream, sid);
    if (kind === 'channel') return this.handleChannel(stream, headers, sid);
    if (kind === 'bytes') return this.handleBytes(stream, headers, sid);
    if (kind === 'tcp') return this.handleTcp(stream, headers);
    refuse(stream, 400, ErrorCodes.PROTOCOL, `unknown netchan-kind ${String(kind)}`);
  }

  /**
   * Whether a stream id of this session is taken: its stream is open, its export waits for the
   * value that names it, or its channel stream is suspended for a resumption. Ids of streams long
   * gone are not remembered, so that a long session's memory does not grow with every stream.
   */
  private inUse(sid: string): boolean {
    return this.openSids.has(sid) || this.unclaimed.has(sid) || this.framedBySid.has(sid) || this.exporters.has(sid);
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
      if (!Number.isInteger(capacity) || capacity < 0 || !Number.isInteger(credits) || credits < 1 || credits > sendWindow(capacity)) {
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
    // a value that sends this handle back ({b: sid}) may have arrived first, on another connection
    this.announce(sid);
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
      this.track(stream);
      this.trackBytes(stream);
      // Nothing flows to a Readable, but the response (its end proof, then END_STREAM) ends only
      // after the request body: proxies (nginx grpc_pass, Caddy) stop forwarding a request body
      // once its response is complete.
      if (mode === 'r') stream.once('end', () => stream.end());
      if (mode === 'w') stream.resume();
      // Node dumps a server stream's unread body once both sides have ended, unless it was
      // read from: a short upload can end before its value is decoded.
      else stream.read(0);
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

  /** A TCP connection through the gateway (docs/PROTOCOL.md §8, lib/gateway/gateway.ts). */
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
    this.announce(sid, true);
  }

  /**
   * Keeps an exported stream until a value names it. Not forgotten when the stream closes: a
   * short byte stream can be complete (and closed by HTTP/2) before its value is decoded, with
   * its bytes still buffered; a channel can be closed with values still to drain.
   */
  private addUnclaimed(sid: string, kind: 'channel' | 'bytes', obj: object, mode?: BytesMode): void {
    // the timer is made elsewhere: a closure made here would keep `obj` (and what it buffered)
    const u: Unclaimed = { kind, obj, mode, timer: this.unclaimedTimer(sid) };
    this.unclaimed.set(sid, u);
    if (kind === 'bytes') (obj as Duplex).once('close', () => this.unclaimedClosed(sid, u));
  }

  private unclaimedTimer(sid: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const u = this.unclaimed.get(sid);
      if (!u) return;
      this.unclaimed.delete(sid);
      debug('session %s: exported stream %s never named by a value, dropped', this.id, sid);
      this.dropUnclaimed(u);
    }, this.referenceTimeoutMs);
    timer.unref();
    return timer;
  }

  /**
   * An exported byte stream closed before a value named it. Reset or failed, what it buffered can
   * never be read (a destroyed stream hands out nothing), so it goes now, not at the reference
   * timeout: a closed stream no longer counts toward maxByteStreamsPerSession, and kept whole, the
   * exports a client resets would have the server hold their buffers with no bound but that
   * timeout. The value that names it still gets a stream failed with the same error.
   */
  private unclaimedClosed(sid: string, u: Unclaimed): void {
    const wire = u.obj as Duplex;
    if (this.unclaimed.get(sid) !== u || !wire.errored) return;
    const failed = new PassThrough();
    failed.on('error', (err) => debug('byte stream error: %s', err.message));
    failed.destroy(wire.errored);
    u.obj = failed;
  }


  protected referencePresent(kind: ReferenceKind, ref: ParsedReference): boolean {
    // a handle of the client's on one of our channels: its stream may still be on its way
    if (ref.back !== undefined) return this.exporters.has(ref.back);
    if (ref.owner !== 'c') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'a client cannot name a server-owned reference');
    const u = this.unclaimed.get(ref.id);
    if (!u) {
      const refused = this.refused.get(ref.id);
      if (refused !== undefined) throw netchanError(ErrorCodes.LIMIT, `stream ${ref.id} was refused: ${refused}`);
      return false;
    }
    if (u.kind !== kind || u.mode !== ref.mode) {
      throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `stream ${ref.id} is not a ${kind === 'channel' ? 'channel' : `byte stream of mode ${ref.mode}`}`);
    }
    return true;
  }

  /** Takes an exported stream for the value naming it (checked present by referencePresent). */
  private claim(id: string): object {
    const u = this.unclaimed.get(id);
    if (!u) throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, `no exported stream ${id} in this session`);
    this.unclaimed.delete(id);
    this.refused.delete(id);
    clearTimeout(u.timer);
    return u.obj;
  }

  private dropUnclaimed(u: Unclaimed): void {
    clearTimeout(u.timer);
    if (u.kind === 'channel') (u.obj as RemoteEndpoint).release();
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

  private addPending(id: string, kind: 'channel' | 'bytes', obj: object, mode?: BytesMode): void {
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
  }

  protected exportChannel(ch: ExportableChannel): ExportPlan {
    const id = `s${this.nextRef++}`;
    return { ref: { o: 's', id }, open: () => this.addPending(id, 'channel', ch) };
  }

  protected exportBytes(obj: object, mode: BytesMode): ExportPlan {
    const id = `s${this.nextRef++}`;
    return { ref: { o: 's', id, m: mode }, open: () => this.addPending(id, 'bytes', obj, mode) };
  }

  protected importChannel(_owner: 'c' | 's', id: string): unknown {
    // the program's handle: the session keeps only the endpoint (see RemoteChannel)
    return new RemoteChannel(this.claim(id) as RemoteEndpoint);
  }

  protected importBytes(_owner: 'c' | 's', id: string): unknown {
    return this.claim(id);
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
  readonly limits: Limits;
  /** The connection and anonymous-session timeouts in force (the options, or their defaults), in ms. */
  readonly timeouts: Timeouts;
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
      maxAnonymousSessions: options.maxAnonymousSessions ?? DEFAULT_LIMITS.maxAnonymousSessions,
      maxUnusedAnonymousSessionsPerConnection: options.maxUnusedAnonymousSessionsPerConnection ?? DEFAULT_LIMITS.maxUnusedAnonymousSessionsPerConnection,
    };
    this.timeouts = {
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? DEFAULT_TIMEOUTS.handshakeTimeoutMs,
      firstRequestTimeoutMs: options.firstRequestTimeoutMs ?? DEFAULT_TIMEOUTS.firstRequestTimeoutMs,
      noSessionTimeoutMs: options.noSessionTimeoutMs ?? DEFAULT_TIMEOUTS.noSessionTimeoutMs,
      unusedAnonymousSessionTimeoutMs: options.unusedAnonymousSessionTimeoutMs ?? DEFAULT_TIMEOUTS.unusedAnonymousSessionTimeoutMs,
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
    const connection = ServerConnection.ofStream(stream) ?? this.adopt(stream);
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
      if (principal === '' && held >= this.limits.maxAnonymousSessions) {
        return refuse(stream, 429, ErrorCodes.LIMIT, `the server has ${held} anonymous sessions open, the limit`);
      }
      const unused = connection?.unusedAnonymousSessions ?? 0;
      if (principal === '' && unused >= this.limits.maxUnusedAnonymousSessionsPerConnection) {
        return refuse(stream, 429, ErrorCodes.LIMIT, `this connection has ${unused} anonymous sessions with no stream open, the limit`);
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
   * Watches an HTTP/2 connection that reached netchan through another server (the Express
   * adapter): closed once it carries no live session for `noSessionTimeoutMs`, but only while it
   * carried netchan streams alone. Its first stream must be netchan's (else earlier streams were
   * the app's), and any later stream of the app's leaves it to the app for good.
   */
  private adopt(stream: ServerStream): ServerConnection | undefined {
    if (stream instanceof MuxStream) return undefined;
    const h2 = (stream as Partial<http2.ServerHttp2Stream>).session;
    const id = (stream as Partial<http2.ServerHttp2Stream>).id;
    if (!(h2 instanceof EventEmitter) || typeof id !== 'number' || !h2.socket) return undefined;
    const connection = ServerConnection.adopted(h2.socket, this.timeouts, id === 1);
    connection.closeWith(h2);
    h2.on('stream', (_stream: unknown, headers: http2.IncomingHttpHeaders) => {
      if (headers[Headers.version] === undefined) connection.disown();
    });
    return connection;
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
      // from now on the socket is the mux's (an upgrade through Express included)
      const connection = ServerConnection.of(socket) ?? ServerConnection.adopted(socket, this.timeouts, true);
      connection.closeWith(mux);
      connection.request();
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
      [Headers.maxChannels]: String(this.limits.maxChannelsPerSession),
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
      ServerConnection.of(s.socket)?.closeWith(s);
      this.h2Sessions.add(s);
      s.once('close', () => this.h2Sessions.delete(s));
      s.on('error', (err) => debug('http2 session error: %s', err.message));
      s.once('remoteSettings', () => s.setLocalWindowSize(32 * 1024 * 1024));
    });
    h2.on('stream', (stream, headers) => {
      stream.on('error', (err) => debug('stream error: %s', err.message));
      ServerConnection.ofStream(stream)?.request();
      if (!this.isOurPath(header(headers, HTTP2_HEADER_PATH))) return refuse(stream, 404, ErrorCodes.NOT_FOUND, 'not a netchan endpoint');
      const principal = this.authenticated(headers, stream.session?.socket);
      if (principal === undefined) return refuse(stream, 401, ErrorCodes.UNAUTHORIZED, 'not authenticated');
      this.serve(stream, headers, { principal });
    });
    // HTTP/1.1 connections: only the WebSocket upgrade is served
    const h1 = http.createServer((req, res) => {
      ServerConnection.of(req.socket)?.request();
      const ours = this.isOurPath(req.url) && req.headers[Headers.version] !== undefined;
      const [status, code, message] = ours
        ? [426, ErrorCodes.PROTOCOL, 'netchan over HTTP/1.1 needs a WebSocket upgrade']
        : [404, ErrorCodes.NOT_FOUND, 'not a netchan endpoint'];
      res.writeHead(status, { 'content-type': 'text/plain', [Headers.error]: code, [Headers.message]: message, ...(ours ? { upgrade: 'websocket' } : {}) });
      res.end(`${code}: ${message}\n`);
    });
    h1.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', (err) => debug('upgrade socket error: %s', err.message));
      ServerConnection.of(socket)?.request();
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
        // the sniffing below waits for bytes: the first-request timeout covers it
        ServerConnection.accepted(socket, this.timeouts);
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
          // Node's own default is 120 s; 0 would mean that default, so "disabled" is the longest timer
          handshakeTimeout: this.timeouts.handshakeTimeoutMs > 0 ? this.timeouts.handshakeTimeoutMs : 2 ** 31 - 1,
        },
        (socket) => {
          ServerConnection.accepted(socket, this.timeouts);
          route(socket, socket.alpnProtocol === 'h2');
        },
      );
      // A handshake that timed out is reported here but its socket is left open: close it.
      listener.on('tlsClientError', (err, socket) => {
        debug('TLS client error: %s', err.message);
        socket.destroy();
      });
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
      // called there, lib/transport/stream-reset.ts).
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
