/**
 * The server: exports named channels, accepts sessions and routes their streams. The streams
 * come from the standalone listener (`listen`, lib/transport/listener.ts), from an existing app
 * (the Express adapter), from WebSocket muxes, or from the in-memory transport; all are wire
 * streams of the transport contract. Auth happens here: the standalone server's `authenticate`
 * (or the mTLS principal), the `authorize` policy per channel, and one principal per session.
 * The server never opens a stream.
 */
import type http from 'node:http';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Channel, type ChannelLike } from '../core/channel.js';
import { debug } from '../core/debug.js';
import { publish } from '../core/diagnostics.js';
import { ErrorCodes, fromNodeError, netchanError } from '../core/errors.js';
import { DEFAULT_MAX_FRAME_BYTES } from '../wire/frames.js';
import { Headers, PROTOCOL_VERSION, header, http1Refusal, refusalBody, refusalHeaders } from '../wire/headers.js';
import type { ServerWireStream, WirePeer } from '../transport/contract.js';
import { appHttp2Stream } from '../transport/http2.js';
import { Listener } from '../transport/listener.js';
import { peerOfSocket } from '../transport/peer.js';
import { WebSocketAcceptor, adoptSubprotocolToken } from '../transport/ws-server.js';
import type { ExportableChannel, PortSource } from '../session/channel-stream.js';
import { refuse } from '../session/refusal.js';
import { emptyStats, type Stats } from '../session/stream-context.js';
import { DEFAULT_LIMITS, DEFAULT_TIMEOUTS, type Limits, type ServerOptions, type StreamContextInfo, type StreamHeaders, type Timeouts } from './options.js';
import { checkOriginPolicy, isLoopbackAddress, originRefusal, type OriginPolicy } from './origin.js';
import { ServerSession, type SessionHost } from './server-session.js';
import type { TunnelService } from './tunnels.js';

export { DEFAULT_LIMITS, DEFAULT_TIMEOUTS } from './options.js';
export type { Limits, ServerOptions, StreamContextInfo, StreamHeaders, Timeouts } from './options.js';

/** A channel whose values live in a backend shared by several servers, as one server serves it. */
export interface BackedChannel<T> extends ChannelLike<T> {
  /** What the server serves to its clients' handles on this channel. */
  readonly served: PortSource;
  /** Resolves once the backend set the channel up; rejects if it cannot. */
  ready(): Promise<void>;
}

/** Where shared channels live (`jetstream()` makes one): several servers with one backend share their channels. */
export interface ChannelBackend {
  /** The shared channel `name` of `capacity`, as this server serves it. */
  channel<T>(name: string, capacity: number): BackedChannel<T>;
}

/** Options of {@link NetchanServer.channel}. */
export interface ChannelOptions {
  /** Keeps the channel's values in this backend, shared with every server that uses it. */
  backend?: ChannelBackend;
}

/**
 * A netchan server. Export channels with {@link NetchanServer.channel}, then `listen`, or mount
 * it on an existing app (`netchan/express`).
 */
export class NetchanServer implements SessionHost {
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
  private readonly originPolicy: OriginPolicy;
  private standalone: Listener | null = null;
  private readonly webSockets: WebSocketAcceptor;
  private tunnelService: TunnelService | null = null;

  constructor(private readonly options: ServerOptions = {}) {
    this.path = options.path ?? '/';
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 15_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 45_000;
    this.pendingReferenceTimeoutMs = options.pendingReferenceTimeoutMs ?? 60_000;
    this.sessionLeaseMs = options.sessionLeaseMs ?? 10_000;
    this.originPolicy = checkOriginPolicy(options.allowedOrigins);
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
    this.webSockets = new WebSocketAcceptor(this.timeouts);
  }

  /** The listening server (TLS, or plain TCP when `insecure`), once `listen` started it. */
  get listener(): net.Server | null {
    return this.standalone?.server ?? null;
  }

  /**
   * Exports a channel under `name`: a new `Channel` of the given capacity, or the one given.
   * Clients reach it with `session.channel(name)`. With a `backend`, the channel is the one of
   * that name every server on the backend shares (docs/cluster.md).
   */
  channel<T>(name: string, capacityOrChannel?: number | Channel<T>): Channel<T>;
  channel<T>(name: string, capacity: number, options: ChannelOptions & { backend: ChannelBackend }): BackedChannel<T>;
  channel<T>(name: string, capacityOrChannel: number | Channel<T> = 0, options: ChannelOptions = {}): Channel<T> | BackedChannel<T> {
    if (typeof name !== 'string' || name.length === 0 || name.length > 256) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'channel name must be a string of 1 to 256 characters');
    }
    let ch: Channel<T> | BackedChannel<T>;
    if (options.backend) {
      if (typeof capacityOrChannel !== 'number') throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'a shared channel is made by its backend: pass a capacity, not a Channel');
      ch = options.backend.channel<T>(name, capacityOrChannel);
    } else ch = typeof capacityOrChannel === 'number' ? new Channel<T>(capacityOrChannel) : capacityOrChannel;
    this.channels.set(name, 'served' in ch ? ch.served : (ch as Channel<unknown>));
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
   * Hands the server's `tcp` streams to `service` (`createGateway` does this; docs/gateway.md).
   * Replacing it leaves the connections of the old one open. @internal
   */
  serveTunnels(service: TunnelService | null): void {
    this.tunnelService = service;
  }

  /** @internal the handler of `tcp` streams, once a gateway was made for this server */
  get tunnels(): TunnelService | null {
    return this.tunnelService;
  }

  /**
   * @internal the principal of a standalone server's stream or upgrade: what `authenticate` says
   * (undefined: refused, and audited when the server is a gateway), else the mTLS principal.
   */
  private authenticated(headers: StreamHeaders, peer: WirePeer): string | undefined {
    const principal = peer.certificatePrincipal;
    const authenticate = this.options.authenticate;
    if (!authenticate) return principal;
    let result: string | false | undefined;
    try {
      result = authenticate({ headers, principal });
    } catch (err) {
      debug('authenticate threw: %s', (err as Error).message);
    }
    if (typeof result === 'string') return result;
    this.tunnelService?.auditUnauthorized({
      remoteAddress: peer.remoteAddress,
      target: header(headers, Headers.target),
      message: 'not authenticated',
    });
    return undefined;
  }

  /** Counters: sessions, streams, channels, byte streams, values and bytes in/out. */
  stats(): Stats {
    const stats = { ...this.statsRef, sessions: this.sessions.size };
    // connections through the gateway count their bytes as they go
    if (this.tunnelService) {
      const live = this.tunnelService.liveBytes();
      stats.tcpBytesIn += live.fromTargets;
      stats.tcpBytesOut += live.toTargets;
    }
    return stats;
  }

  /**
   * Handles one netchan stream of any transport: the standalone server's, an app's HTTP/2 server
   * (the Express adapter), a WebSocket mux, the in-memory transport. The caller has decided the
   * stream belongs to netchan and who its principal is.
   */
  handleStream(stream: ServerWireStream, info: StreamContextInfo = {}): void {
    try {
      this.route(stream, info);
    } finally {
      stream.routed();
    }
  }

  private route(stream: ServerWireStream, info: StreamContextInfo): void {
    // reset or cut off before it got here (the app's middleware may have taken its time): there
    // is no one to answer, and nothing may be written to it
    if (stream.gone) return;
    const headers = stream.headers;
    const principal = info.principal ?? '';
    const connection = stream.peer.connection;
    if (header(headers, ':method') !== 'POST') return refuse(stream, 405, ErrorCodes.PROTOCOL, 'netchan streams use POST');
    const version = header(headers, Headers.version);
    if (version !== PROTOCOL_VERSION) return refuse(stream, 400, ErrorCodes.PROTOCOL, `unsupported netchan-version ${String(version)}`);
    const foreign = originRefusal(this.originPolicy, header(headers, 'origin'), header(headers, ':authority'), header(headers, 'x-forwarded-host'), header(headers, ':scheme') === 'https');
    if (foreign) return refuse(stream, 403, foreign.code, foreign.message);
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
      stream.respond(200, this.sessionHeaders(session));
      session.attachControl(stream, this.idleTimeoutMs);
      publish('sessionOpen', () => ({ side: 'server', sessionId: session.id, principal, transport: stream.peer.transport, resumable: lease > 0 }));
      return;
    }
    const sessionId = header(headers, Headers.session);
    const session = sessionId ? this.sessions.get(sessionId) : undefined;
    if (!session) return refuse(stream, 404, ErrorCodes.UNKNOWN_SESSION, 'no such session');
    if (session.principal !== principal) {
      return refuse(stream, 403, ErrorCodes.UNAUTHORIZED, 'stream presents another principal than its session');
    }
    session.handle(stream);
  }

  /**
   * Takes over an HTTP/1.1 upgrade request for the WebSocket fallback (docs/PROTOCOL.md §7): all
   * streams of the mux get `info.principal`. The caller (the standalone server, or the Express
   * middleware after the app's auth) decided the request is netchan's.
   */
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, info: StreamContextInfo = {}): void {
    const h = req.headers;
    const tls = (req.socket as { encrypted?: boolean }).encrypted === true;
    const loopback = isLoopbackAddress((req.socket as { localAddress?: string }).localAddress);
    const foreign = originRefusal(this.originPolicy, h.origin, h.host, typeof h['x-forwarded-host'] === 'string' ? h['x-forwarded-host'] : undefined, tls, loopback);
    if (foreign) return void socket.end(http1Refusal(403, 'Forbidden', foreign.code, foreign.message));
    this.webSockets.accept(req, socket, head, (stream) => this.serveStream(stream, info));
  }

  /**
   * The netchan stream of an app's HTTP/2 request (the Express adapter), taken over with its
   * connection; undefined for an HTTP/1.1 request. @internal
   */
  appStream(req: unknown): ServerWireStream | undefined {
    return appHttp2Stream(req, this.timeouts);
  }

  /**
   * {@link handleStream} for transports where nothing above would catch what it throws (the
   * standalone listener, WebSocket muxes, the in-memory transport): one stream's failure must not
   * end the process, so the stream is failed instead. @internal
   */
  serveStream(stream: ServerWireStream, info: StreamContextInfo = {}): void {
    try {
      this.handleStream(stream, info);
    } catch (err) {
      debug('stream handling failed: %s', (err as Error).stack ?? err);
      stream.fail(fromNodeError(err, ErrorCodes.PROTOCOL));
    }
  }

  private sessionHeaders(session: ServerSession): Record<string, string> {
    return {
      [Headers.session]: session.id,
      [Headers.heartbeatMs]: String(this.heartbeatIntervalMs),
      [Headers.maxFrameBytes]: String(this.options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES),
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
    const listener = new Listener(
      { key, cert, ca, requestCert, insecure, handshakeTimeoutMs: this.timeouts.handshakeTimeoutMs, timeouts: this.timeouts },
      {
        stream: (stream) => {
          if (!this.isOurPath(header(stream.headers, ':path'))) return refuse(stream, 404, ErrorCodes.NOT_FOUND, 'not a netchan endpoint');
          const principal = this.authenticated(stream.headers, stream.peer);
          if (principal === undefined) return refuse(stream, 401, ErrorCodes.UNAUTHORIZED, 'not authenticated');
          this.serveStream(stream, { principal });
        },
        // HTTP/1.1 connections: only the WebSocket upgrade is served
        request: (req, res) => {
          const ours = this.isOurPath(req.url) && req.headers[Headers.version] !== undefined;
          const [status, code, message] = ours
            ? [426, ErrorCodes.PROTOCOL, 'netchan over HTTP/1.1 needs a WebSocket upgrade']
            : [404, ErrorCodes.NOT_FOUND, 'not a netchan endpoint'];
          res.writeHead(status, { ...refusalHeaders(code, message), ...(ours ? { upgrade: 'websocket' } : {}) });
          res.end(refusalBody(code, message));
        },
        upgrade: (req, socket, head) => {
          if (!this.isOurPath(req.url)) return void socket.end(http1Refusal(404, 'Not Found', ErrorCodes.NOT_FOUND, 'not a netchan endpoint'));
          adoptSubprotocolToken(req);
          const principal = this.authenticated(req.headers, peerOfSocket('ws', socket));
          if (principal === undefined) return void socket.end(http1Refusal(401, 'Unauthorized', ErrorCodes.UNAUTHORIZED, 'not authenticated'));
          this.handleUpgrade(req, socket, head, { principal });
        },
      },
    );
    this.standalone = listener;
    return listener.listen(port, host);
  }

  private isOurPath(url: string | undefined): boolean {
    return (url ?? '').split('?')[0] === this.path;
  }

  /** Ends every session and stops listening. */
  async close(): Promise<void> {
    this.tunnelService?.close();
    for (const session of [...this.sessions.values()]) session.end(netchanError(ErrorCodes.SESSION_CLOSED, 'server closing'));
    this.webSockets.close();
    const listener = this.standalone;
    if (!listener) return;
    // the standalone server's own connections are dropped; under an app, WebSocket connections
    // close once their sessions' streams are done, as the app's HTTP/2 ones do
    const closed = listener.close();
    this.webSockets.destroy();
    await closed;
  }
}

/** Creates a netchan server. See {@link ServerOptions}. */
export function createServer(options: ServerOptions = {}): NetchanServer {
  return new NetchanServer(options);
}
