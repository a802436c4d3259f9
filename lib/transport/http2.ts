/**
 * The HTTP/2 adapter of the transport contract (lib/transport/contract.ts): Node's `Http2Stream`
 * and `ClientHttp2Session` behind the contract's few methods. Resets and destroys go through
 * lib/transport/stream-reset.ts, which knows when Node 20 may write them.
 */
import http2 from 'node:http2';
import type net from 'node:net';
import type tls from 'node:tls';
import type { NetchanError } from '../core/errors.js';
import { Headers, type HeaderMap } from '../wire/headers.js';
import { cutOffError, onConnectionClose, type ClientWireSession, type ClientWireStream, type ResetReason, type ServerWireStream, type WirePeer, type WireResponse } from './contract.js';
import { ServerConnection, type ConnectionTimeouts } from './connections.js';
import { peerOfSocket } from './peer.js';
import { destroySession, guardDestroy, resetStream } from './stream-reset.js';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_PROTOCOL_ERROR, NGHTTP2_INTERNAL_ERROR } = http2.constants;

/** Each HTTP/2 stream's receive window, in bytes (both sides). */
export const STREAM_WINDOW_BYTES = 1024 * 1024;
/** Each HTTP/2 connection's receive window, in bytes (both sides): many streams' worth. */
export const CONNECTION_WINDOW_BYTES = 32 * 1024 * 1024;

/** The HTTP/2 error code of each reset reason (RFC 9113 §7). */
export const RESET_CODES: Readonly<Record<ResetReason, number>> = {
  cancel: NGHTTP2_CANCEL,
  done: NGHTTP2_NO_ERROR,
  refused: NGHTTP2_REFUSED_STREAM,
  protocol: NGHTTP2_PROTOCOL_ERROR,
  internal: NGHTTP2_INTERNAL_ERROR,
};

/** What an HTTP/2 stream's session tells about the connection. */
interface SessionState {
  readonly closed: boolean;
  readonly destroyed: boolean;
}

/** Both sides of an HTTP/2 stream. */
class Http2WireStream {
  /** An HTTP/2 stream forgets its session when destroyed: kept to tell a lost connection apart. */
  private readonly session: SessionState | undefined;

  constructor(readonly bytes: http2.Http2Stream) {
    this.session = bytes.session;
    guardDestroy(bytes);
  }

  get cutOff(): boolean {
    // Node also ends the readable side of a stream reset or cut off with its connection
    return Boolean(this.bytes.rstCode);
  }

  endedBy(): NetchanError {
    const session = this.session;
    return cutOffError(session !== undefined && (session.closed || session.destroyed));
  }

  reset(reason: ResetReason = 'cancel'): void {
    resetStream(this.bytes, undefined, reason === 'cancel' ? undefined : RESET_CODES[reason]);
  }

  fail(error: Error): void {
    resetStream(this.bytes, error);
  }
}

/** A stream this side opened on a {@link Http2ClientSession}. */
export class Http2ClientStream extends Http2WireStream implements ClientWireStream {
  declare readonly bytes: http2.ClientHttp2Stream;

  onResponse(fn: (response: WireResponse) => void): void {
    this.bytes.once('response', (headers) => fn({ status: Number(headers[':status']), headers: headers as HeaderMap }));
  }
}

/** A stream a client opened, as a server (standalone, or the app's under Express) got it. */
export class Http2ServerStream extends Http2WireStream implements ServerWireStream {
  declare readonly bytes: http2.ServerHttp2Stream;
  readonly peer: WirePeer;

  constructor(
    bytes: http2.ServerHttp2Stream,
    public headers: HeaderMap,
  ) {
    super(bytes);
    this.peer = peerOf(bytes.session);
  }

  routed(): void {
    this.headers = NO_HEADERS;
  }

  get responded(): boolean {
    return this.bytes.headersSent;
  }

  get gone(): boolean {
    return this.bytes.destroyed || this.bytes.closed;
  }

  respond(status: number, headers: Readonly<Record<string, string>> = {}, options: { endStream?: boolean } = {}): void {
    if (this.responded || this.gone) return;
    this.bytes.respond({ ':status': status, ...headers }, options);
  }

}

/** The headers of a routed stream: none kept. */
const NO_HEADERS: HeaderMap = Object.freeze({});

/** What each HTTP/2 connection's streams share: asked of its socket once, at its first stream. */
const peers = new WeakMap<http2.Http2Session, WirePeer>();

/**
 * What a server knows of the connection a stream arrived on. The socket of an HTTP/2 session
 * is a proxy that throws once the session let go of it: read while the stream is fresh.
 */
function peerOf(session: http2.Http2Session | undefined): WirePeer {
  const known = session && peers.get(session);
  if (known) return known;
  const peer = peerOfSocket('h2', session?.socket);
  if (session) peers.set(session, peer);
  return peer;
}

/** A client's HTTP/2 connection. */
export class Http2ClientSession implements ClientWireSession {
  readonly kind = 'h2';
  private readonly pseudo: Record<string, string>;

  constructor(
    private readonly h2: http2.ClientHttp2Session,
    url: URL,
  ) {
    this.pseudo = { ':method': 'POST', ':path': url.pathname || '/', ':scheme': url.protocol === 'https:' ? 'https' : 'http', ':authority': url.host };
  }

  open(headers: Readonly<Record<string, string>>): Http2ClientStream {
    return new Http2ClientStream(this.h2.request({ ...this.pseudo, ...headers }));
  }

  onClose(fn: (error: NetchanError) => void): void {
    onConnectionClose(this.h2, fn);
  }


  get closed(): boolean {
    return this.h2.closed || this.h2.destroyed;
  }

  close(): Promise<void> {
    // closing a session with no stream left destroys it: not from inside nghttp2's receive
    return new Promise((resolve) => setImmediate(() => (this.closed ? resolve() : this.h2.close(() => resolve()))));
  }

  destroy(): void {
    destroySession(this.h2);
  }
}

/** Starts HTTP/2 on a connected socket (TLS with ALPN `h2`, or h2c with prior knowledge). */
export function openHttp2(url: URL, socket: net.Socket | tls.TLSSocket): Http2ClientSession {
  const h2 = http2.connect(url.origin, {
    createConnection: () => socket,
    settings: { initialWindowSize: STREAM_WINDOW_BYTES },
    maxSessionMemory: 64,
  });
  h2.on('error', () => undefined); // reported through onClose
  h2.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
  return new Http2ClientSession(h2, url);
}

/** Servers an app runs its HTTP/2 (and HTTP/1.1) on, for the Express adapter. */
export type Http2AppServer = http2.Http2SecureServer | http2.Http2Server;

/** The compatibility API's request and response classes, which the Express adapter builds on. */
export const Http2Compat = { Request: http2.Http2ServerRequest, Response: http2.Http2ServerResponse } as const;

/**
 * The netchan stream of a request an app's HTTP/2 server received (the Express adapter), or
 * undefined for an HTTP/1.1 request. Its connection, which the app's server accepted, is watched
 * by the server from now on: closed once it carries no live session for `noSessionTimeoutMs`,
 * but only while it carried netchan streams alone. Its first stream must be netchan's (else
 * earlier streams were the app's), and any later stream of the app's leaves it to the app for good.
 */
export function appHttp2Stream(req: unknown, timeouts: ConnectionTimeouts): Http2ServerStream | undefined {
  if (!(req instanceof http2.Http2ServerRequest)) return undefined;
  const stream = req.stream;
  const h2 = stream.session;
  if (h2?.socket && !stream.destroyed && !stream.closed && !ServerConnection.of(h2.socket)) {
    const connection = ServerConnection.adopted(h2.socket, timeouts, stream.id === 1);
    connection.closeWith(h2);
    h2.on('stream', (_stream: unknown, headers: http2.IncomingHttpHeaders) => {
      if (headers[Headers.version] === undefined) connection.disown();
    });
  }
  return new Http2ServerStream(stream, req.headers);
}
