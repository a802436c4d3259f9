/**
 * The client: a logical session over one HTTP/2 connection. The client opens every stream: for
 * a named channel, for each channel or byte stream it puts inside a value (before the value goes
 * out), and for each server-owned reference it receives.
 */
import http2 from 'node:http2';
import { randomBytes } from 'node:crypto';
import type { ChannelLike } from './channel.js';
import { ChannelExporter, type ExportableChannel, type RemoteChannel } from './channel-stream.js';
import { ErrorCodes, NetchanError, fromNodeError, netchanError } from './errors.js';
import { FrameType } from './frames.js';
import type { FramedStream } from './framed-stream.js';
import { Headers, PROTOCOL_VERSION, SessionCore, debug, joinBytes, type BytesMode, type SessionOptions } from './session.js';
import { emptyStats, type Stats } from './stream-context.js';
import type { ClientTlsOptions } from './tls.js';
import { openTransport, type ClientStream, type ClientTransport, type ResponseHeaders, type TransportChoice } from './transport.js';

const { HTTP2_HEADER_STATUS, HTTP2_HEADER_METHOD, HTTP2_HEADER_PATH, HTTP2_HEADER_AUTHORITY, HTTP2_HEADER_SCHEME } = http2.constants;

/** Options of {@link connect}. */
export interface ConnectOptions extends ClientTlsOptions, SessionOptions {
  /** Extra request headers sent on every stream (e.g. for the app's own auth). */
  headers?: Record<string, string>;
  /** A bearer token, sent as `authorization: Bearer <token>` on every stream. */
  token?: string;
  /** Heartbeat interval in ms. Default: what the server asks for (15000 unless configured). */
  heartbeatIntervalMs?: number;
  /** The session is considered dead after this long without a frame from the server, in ms. Default 3 × heartbeat. */
  idleTimeoutMs?: number;
  /**
   * `h2`: HTTP/2 only. `ws`: the WebSocket fallback only (one WebSocket carrying every stream,
   * docs/PROTOCOL.md §7). `auto` (default): HTTP/2, falling back to a WebSocket when the server
   * or a proxy on the way speaks only HTTP/1.1 (ALPN without `h2`, or a `426` answer).
   */
  transport?: TransportChoice;
  /**
   * Allows an `http:` URL: plaintext HTTP/2 (h2c) or WebSocket, for loopback, a unix socket
   * (`socketPath`) or behind a TLS-terminating proxy. Default false: `http:` URLs are refused.
   */
  insecure?: boolean;
  /** With `insecure`, connect to this unix socket; the URL then gives only the path. */
  socketPath?: string;
}

/** A handle on a channel the server exports; same interface as a local Channel, plus `release()`. */
export type RemoteChannelHandle<T> = ChannelLike<T> & { release(): void };

function header(headers: ResponseHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v[0] : v === undefined ? undefined : String(v);
}

function refusal(headers: ResponseHeaders): NetchanError {
  const status = Number(headers[HTTP2_HEADER_STATUS]);
  const code = header(headers, Headers.error) ?? (status === 401 || status === 403 ? ErrorCodes.UNAUTHORIZED : ErrorCodes.PROTOCOL);
  const message = header(headers, Headers.message) ?? `server answered ${status}`;
  return netchanError(code, message, { status });
}

/** A client session. Get one with {@link connect}. */
export class Session extends SessionCore {
  private nextStream = 1;
  private heartbeat: NodeJS.Timeout | null = null;
  private lastFrameAt = Date.now();
  private control: FramedStream | null = null;
  private closing: Promise<void> | null = null;

  /** @internal */
  constructor(
    id: string,
    private readonly h2: ClientTransport,
    /** Which transport carries this session: `h2` or `ws`. */
    readonly transport: 'h2' | 'ws',
    private readonly path: string,
    private readonly extraHeaders: Record<string, string>,
    options: ConnectOptions,
  ) {
    super(id, emptyStats(), options);
    this.counters.sessions = 1;
    h2.on('error', (err) => this.fail(fromNodeError(err)));
    h2.on('close', () => this.fail(netchanError(ErrorCodes.CONNECTION_LOST, 'connection closed')));
  }

  /** @internal */
  attachControl(stream: ClientStream, heartbeatIntervalMs: number, idleTimeoutMs: number): void {
    this.track(stream);
    const fs = this.framed(stream);
    this.control = fs;
    fs.setSink({
      onFrame: (type, payload) => {
        this.lastFrameAt = Date.now();
        if (type === FrameType.PING) fs.frame(FrameType.PONG, payload);
      },
      onStreamEnd: () => this.fail(netchanError(ErrorCodes.SESSION_CLOSED, 'server ended the session')),
      onStreamError: (err) => this.fail(err),
      onStreamClose: () => this.fail(netchanError(ErrorCodes.SESSION_CLOSED, 'control stream closed')),
    });
    this.heartbeat = setInterval(() => {
      if (Date.now() - this.lastFrameAt > idleTimeoutMs) {
        this.fail(netchanError(ErrorCodes.TIMEOUT, `no frame from the server for ${idleTimeoutMs} ms`));
        return;
      }
      fs.frame(FrameType.PING, randomBytes(8));
    }, heartbeatIntervalMs);
    this.heartbeat.unref();
  }

  /** A handle on the server's channel `name`. Errors (an unknown name) surface on its operations. */
  channel<T>(name: string): RemoteChannelHandle<T> {
    if (this.ended) throw netchanError(ErrorCodes.SESSION_CLOSED, 'session is closed');
    const sid = this.newStreamId();
    const stream = this.open({ [Headers.kind]: 'channel', [Headers.name]: name }, sid);
    return this.remoteOn<T>(stream, sid);
  }

  /** Counters: streams, channels, byte streams, values and bytes in/out. */
  stats(): Stats {
    return { ...this.counters };
  }

  /** True once the session ended (closed, or the connection was lost). */
  get closed(): boolean {
    return this.ended;
  }

  /** Ends the session: handles reject pending operations, streams and the connection close. */
  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.stop(netchanError(ErrorCodes.SESSION_CLOSED, 'session closed'), true);
      if (this.h2.closed || this.h2.destroyed) return resolve();
      this.h2.close(() => resolve());
    });
    return this.closing;
  }

  private fail(error: NetchanError): void {
    if (this.ended) return;
    debug('session %s failed: %s', this.id, error.message);
    this.stop(error);
    if (!this.h2.destroyed) this.h2.destroy();
  }

  private stop(error: NetchanError, graceful = false): void {
    if (this.ended) return;
    if (this.heartbeat) clearInterval(this.heartbeat);
    // graceful: the channel streams' acknowledgements are written before the control stream ends
    if (graceful) this.teardown(error, true);
    this.control?.end();
    this.teardown(error);
    this.counters.sessions = 0;
  }

  private newStreamId(): string {
    return `c${this.nextStream++}`;
  }

  private open(kindHeaders: Record<string, string>, sid: string): ClientStream {
    const stream = this.h2.request({
      [HTTP2_HEADER_METHOD]: 'POST',
      [HTTP2_HEADER_PATH]: this.path,
      ...this.extraHeaders,
      [Headers.version]: PROTOCOL_VERSION,
      [Headers.session]: this.id,
      [Headers.stream]: sid,
      ...kindHeaders,
    });
    stream.on('error', (err) => debug('stream %s error: %s', sid, err.message));
    this.track(stream);
    return stream;
  }

  private remoteOn<T>(stream: ClientStream, sid: string): RemoteChannel<T> {
    const rc = this.attachRemote<T>(this.framed(stream), sid);
    stream.once('response', (headers: ResponseHeaders) => {
      if (Number(headers[HTTP2_HEADER_STATUS]) !== 200) return rc.failOpen(refusal(headers));
      const capacity = Number(header(headers, Headers.capacity));
      const credits = Number(header(headers, Headers.credit));
      if (!Number.isInteger(capacity) || capacity < 0 || !Number.isInteger(credits) || credits < 1) {
        return rc.failOpen(netchanError(ErrorCodes.PROTOCOL, 'server sent bad netchan-capacity or netchan-credit'));
      }
      rc.open({ capacity, credits });
    });
    return rc;
  }

  protected exportChannel(ch: ExportableChannel): Record<string, unknown> {
    const sid = this.newStreamId();
    const stream = this.open(
      {
        [Headers.kind]: 'channel',
        [Headers.exportRef]: sid,
        [Headers.capacity]: String(ch.capacity),
        [Headers.credit]: String(ChannelExporter.initialCredits(ch)),
      },
      sid,
    );
    const fs = this.framed(stream);
    this.attachExporter(fs, ch, sid);
    stream.once('response', (headers: ResponseHeaders) => {
      if (Number(headers[HTTP2_HEADER_STATUS]) !== 200) fs.destroy(refusal(headers));
    });
    return { o: 'c', id: sid };
  }

  protected exportBytes(obj: object, mode: BytesMode): Record<string, unknown> {
    const sid = this.newStreamId();
    const stream = this.open({ [Headers.kind]: 'bytes', [Headers.exportRef]: sid, [Headers.mode]: mode }, sid);
    this.trackBytes(stream);
    joinBytes(obj, stream, mode);
    return { o: 'c', id: sid, m: mode };
  }

  protected importChannel(owner: 'c' | 's', id: string): unknown {
    if (owner !== 's') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'the server cannot name a client-owned reference');
    const sid = this.newStreamId();
    const stream = this.open({ [Headers.kind]: 'channel', [Headers.ref]: id }, sid);
    return this.remoteOn(stream, sid);
  }

  protected importBytes(owner: 'c' | 's', id: string, mode: BytesMode): unknown {
    if (owner !== 's') throw netchanError(ErrorCodes.UNKNOWN_REFERENCE, 'the server cannot name a client-owned reference');
    const sid = this.newStreamId();
    const stream = this.open({ [Headers.kind]: 'bytes', [Headers.ref]: id }, sid);
    this.trackBytes(stream);
    stream.once('response', (headers: ResponseHeaders) => {
      if (Number(headers[HTTP2_HEADER_STATUS]) !== 200) stream.destroy(refusal(headers));
    });
    if (mode === 'r') stream.end(); // the server's Readable: nothing flows from us
    if (mode === 'w') stream.resume(); // the server's Writable: nothing flows to us
    return stream;
  }
}

/**
 * Connects to a netchan server and opens a session.
 * @param url `https://host:port/path` (the path the server or the Express mount serves);
 *   `http://` only with `insecure: true`.
 */
export async function connect(url: string | URL, options: ConnectOptions = {}): Promise<Session> {
  const u = new URL(url);
  if (u.protocol === 'http:' && !options.insecure) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'an http: URL is plaintext: pass insecure: true to allow it (loopback, unix socket, or behind a TLS-terminating proxy)');
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw netchanError(ErrorCodes.INVALID_ARGUMENT, `connect needs an https: URL, got ${u.protocol}`);
  const choice = options.transport ?? 'auto';
  if (choice !== 'auto' && choice !== 'h2' && choice !== 'ws') throw netchanError(ErrorCodes.INVALID_ARGUMENT, `transport must be auto, h2 or ws, got ${String(choice)}`);
  if (options.socketPath && !options.insecure) throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'socketPath needs insecure: true');
  const extra: Record<string, string> = { ...(options.headers ?? {}) };
  if (options.token) extra.authorization = `Bearer ${options.token}`;
  const open = await openTransport(u, choice, { ...options, headers: extra });
  try {
    return await startSession(u, open.transport, open.kind, extra, options);
  } catch (err) {
    open.transport.destroy();
    // an HTTP/2 hop that reaches a server only over HTTP/1.1 answers 426: try a WebSocket
    if (choice === 'auto' && open.kind === 'h2' && err instanceof NetchanError && err.status === 426) {
      debug('HTTP/2 refused with 426, falling back to WebSocket');
      const ws = await openTransport(u, 'ws', { ...options, headers: extra });
      try {
        return await startSession(u, ws.transport, 'ws', extra, options);
      } catch (err2) {
        ws.transport.destroy();
        throw err2;
      }
    }
    throw err;
  }
}

async function startSession(u: URL, transport: ClientTransport, kind: 'h2' | 'ws', extra: Record<string, string>, options: ConnectOptions): Promise<Session> {
  const path = u.pathname || '/';
  const control = transport.request({
    [HTTP2_HEADER_METHOD]: 'POST',
    [HTTP2_HEADER_PATH]: path,
    [HTTP2_HEADER_SCHEME]: u.protocol === 'https:' ? 'https' : 'http',
    [HTTP2_HEADER_AUTHORITY]: u.host,
    ...extra,
    [Headers.version]: PROTOCOL_VERSION,
    [Headers.kind]: 'session',
  });
  const headers = await new Promise<ResponseHeaders>((resolve, reject) => {
    control.once('response', resolve);
    control.once('error', (err) => reject(fromNodeError(err)));
    control.once('close', () => reject(netchanError(ErrorCodes.CONNECT, 'server closed the session stream before answering')));
    transport.once('error', (err) => reject(fromNodeError(err)));
  });
  if (Number(headers[HTTP2_HEADER_STATUS]) !== 200) throw refusal(headers);
  const id = header(headers, Headers.session);
  if (!id || !/^[0-9a-f]{32}$/.test(id)) throw netchanError(ErrorCodes.PROTOCOL, 'server sent no valid session id');
  const heartbeat = options.heartbeatIntervalMs ?? (Number(header(headers, Headers.heartbeatMs)) || 15_000);
  const session = new Session(id, transport, kind, path, extra, options);
  const serverMax = Number(header(headers, Headers.maxFrameBytes));
  if (Number.isSafeInteger(serverMax) && serverMax >= 0) session.peerMaxFrameBytes = serverMax;
  control.removeAllListeners('close');
  control.removeAllListeners('error');
  control.on('error', (err) => debug('control stream error: %s', err.message));
  session.attachControl(control, heartbeat, options.idleTimeoutMs ?? heartbeat * 3);
  return session;
}
