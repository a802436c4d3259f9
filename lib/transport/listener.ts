/**
 * The standalone server's listening side: TLS 1.3 (or plaintext with `insecure`) on a port or a
 * unix socket, HTTP/2 for connections that pick it (ALPN `h2`, or the h2c preface) and HTTP/1.1
 * for the rest, whose only use is the WebSocket upgrade. It accepts connections and hands over
 * what arrives on them; what a stream or request means is the server's business.
 */
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { debug } from '../core/debug.js';
import { ServerConnection, type ConnectionTimeouts } from './connections.js';
import { CONNECTION_WINDOW_BYTES, Http2ServerStream, STREAM_WINDOW_BYTES } from './http2.js';

/** How to listen. */
export interface ListenerOptions {
  key?: string | Buffer;
  cert?: string | Buffer;
  ca?: string | Buffer | (string | Buffer)[];
  requestCert?: boolean;
  /** Plaintext: h2c with prior knowledge, or HTTP/1.1. */
  insecure?: boolean;
  /** The TLS handshake timeout in ms; 0 disables. */
  handshakeTimeoutMs: number;
  timeouts: ConnectionTimeouts;
}

/** What arrives on the listener's connections. */
export interface ListenerHandlers {
  /** A stream of an HTTP/2 connection. */
  stream(stream: Http2ServerStream): void;
  /** A plain HTTP/1.1 request (not an upgrade). */
  request(req: http.IncomingMessage, res: http.ServerResponse): void;
  /** An HTTP/1.1 upgrade request; `socket` is the connection's. */
  upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** A listening server: its connections, and how to stop it. */
export class Listener {
  /** The listening server (TLS, or plain TCP when `insecure`). */
  readonly server: net.Server;
  private readonly h2Sessions = new Set<http2.ServerHttp2Session>();
  private readonly sockets = new Set<net.Socket>();
  private readonly h2Sockets = new WeakSet<net.Socket>();

  constructor(options: ListenerOptions, handlers: ListenerHandlers) {
    const h2 = http2.createServer({ settings: { initialWindowSize: STREAM_WINDOW_BYTES, maxConcurrentStreams: 10_000 } });
    h2.on('session', (s) => {
      ServerConnection.of(s.socket)?.closeWith(s);
      this.h2Sessions.add(s);
      s.once('close', () => this.h2Sessions.delete(s));
      s.on('error', (err) => debug('http2 session error: %s', err.message));
      s.once('remoteSettings', () => s.setLocalWindowSize(CONNECTION_WINDOW_BYTES));
    });
    h2.on('stream', (stream, headers) => {
      stream.on('error', (err) => debug('stream error: %s', err.message));
      ServerConnection.of(stream.session?.socket)?.request();
      handlers.stream(new Http2ServerStream(stream, headers));
    });
    const h1 = http.createServer((req, res) => {
      ServerConnection.of(req.socket)?.request();
      handlers.request(req, res);
    });
    h1.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', (err) => debug('upgrade socket error: %s', err.message));
      ServerConnection.of(socket)?.request();
      handlers.upgrade(req, socket, head);
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
    if (options.insecure) {
      // h2c with prior knowledge starts with the HTTP/2 preface; anything else is HTTP/1.1
      this.server = net.createServer((socket) => {
        socket.on('error', (err) => debug('socket error: %s', err.message));
        // the sniffing below waits for bytes: the first-request timeout covers it
        ServerConnection.accepted(socket, options.timeouts);
        sniffPreface(socket, (isH2) => route(socket, isH2));
      });
    } else {
      const server = tls.createServer(
        {
          key: options.key,
          cert: options.cert,
          ca: options.ca,
          requestCert: options.requestCert ?? false,
          rejectUnauthorized: options.requestCert ?? false,
          minVersion: 'TLSv1.3',
          ALPNProtocols: ['h2', 'http/1.1'],
          // Node's own default is 120 s; 0 would mean that default, so "disabled" is the longest timer
          handshakeTimeout: options.handshakeTimeoutMs > 0 ? options.handshakeTimeoutMs : 2 ** 31 - 1,
        },
        (socket) => {
          ServerConnection.accepted(socket, options.timeouts);
          route(socket, socket.alpnProtocol === 'h2');
        },
      );
      // A handshake that timed out is reported here but its socket is left open: close it.
      server.on('tlsClientError', (err, socket) => {
        debug('TLS client error: %s', err.message);
        socket.destroy();
      });
      this.server = server;
    }
  }

  /** Listens on `port` and `host`, or on a unix socket when `port` is a path; resolves to the bound address. */
  listen(port: number | string, host: string): Promise<AddressInfo> {
    const listener = this.server;
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

  /**
   * Stops listening and asks every connection to go: HTTP/2 ones with a GOAWAY, the others (the
   * WebSocket ones were closed by their muxes) at once; whatever is left after 2 s is dropped.
   */
  close(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      // Not at once: closing a session with no stream left destroys it, which must not happen
      // inside nghttp2's receive (close() may be called there, lib/transport/stream-reset.ts).
      setImmediate(() => {
        for (const s of this.h2Sessions) s.close();
      });
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
