/**
 * Transports: what carries a session's streams. HTTP/2 (over TLS, or h2c when `insecure`) and
 * the WebSocket fallback (lib/transport/ws-mux.ts) are two adapters behind the same small interface, so
 * the session never asks which one it runs on.
 */
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { WebSocket } from 'ws';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import { connectTls, type ClientTlsOptions } from './tls.js';
import { MUX_MAX_MESSAGE, WS_SUBPROTOCOL, WsMux } from './ws-mux.js';

/** Response headers as a stream's `'response'` event gives them. */
export type ResponseHeaders = Record<string, string | string[] | number | undefined>;

/** A client-opened stream: a Duplex that emits `'response'` (headers) and can be reset. */
export type ClientStream = Duplex & { close(code?: number): void };

/** A stream as the server sees it: a Duplex it answers with `respond`. */
export type ServerStream = Duplex & {
  respond(headers: Record<string, string | number>, options?: { endStream?: boolean }): void;
  readonly headersSent: boolean;
  close(code?: number): void;
};

/** What a client session needs of its connection. */
export interface ClientTransport {
  request(headers: Record<string, string | number>): ClientStream;
  /** No new streams; closes once the open ones are done. */
  close(callback?: () => void): void;
  destroy(): void;
  readonly closed: boolean;
  readonly destroyed: boolean;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  once(event: 'error', listener: (err: Error) => void): unknown;
}

/** Which transport `connect` uses. */
export type TransportChoice = 'auto' | 'h2' | 'ws';

/** Options of {@link openTransport}. */
export interface TransportOptions extends ClientTlsOptions {
  /** Plaintext (h2c or ws://) for `http:` URLs: loopback, unix sockets, or behind a TLS-terminating proxy. */
  insecure?: boolean;
  /** Connect to this unix socket instead of the URL's host and port (needs `insecure`). */
  socketPath?: string;
  /** Headers for the WebSocket upgrade request (auth). */
  headers?: Record<string, string>;
}

/** An open transport and which one it is. */
export interface OpenTransport {
  kind: 'h2' | 'ws';
  transport: ClientTransport;
}

/**
 * Connects to `url` over the transport asked for. With `auto`, TLS offers ALPN `h2` and
 * `http/1.1`: HTTP/2 when the server picks it, otherwise a WebSocket on the same connection.
 */
export async function openTransport(u: URL, choice: TransportChoice, options: TransportOptions): Promise<OpenTransport> {
  const secure = u.protocol === 'https:';
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || (secure ? 443 : 80));
  if (!secure) {
    const socket = await connectPlain(host, port, options);
    if (choice === 'ws') return { kind: 'ws', transport: await openWebSocket(u, socket, options) };
    return { kind: 'h2', transport: openH2(u, socket) };
  }
  // A WebSocket client offers no ALPN: HTTP/1.1 is then the default, and servers that speak
  // only HTTP/2 with ALPN (a standalone netchan server) treat the connection as HTTP/1.1.
  const alpn = choice === 'h2' ? ['h2'] : choice === 'ws' ? undefined : ['h2', 'http/1.1'];
  const socket = await connectTls(host, port, { ...options, alpn });
  if (socket.alpnProtocol === 'h2') return { kind: 'h2', transport: openH2(u, socket) };
  return { kind: 'ws', transport: await openWebSocket(u, socket, options) };
}

function openH2(u: URL, socket: net.Socket | tls.TLSSocket): ClientTransport {
  const h2 = http2.connect(u.origin, {
    createConnection: () => socket,
    settings: { initialWindowSize: 1024 * 1024 },
    maxSessionMemory: 64,
  });
  h2.on('error', () => undefined); // reported through the session once it exists
  h2.setLocalWindowSize(32 * 1024 * 1024);
  return h2 as unknown as ClientTransport;
}

function connectPlain(host: string, port: number, options: TransportOptions): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = options.socketPath ? net.connect(options.socketPath) : net.connect({ host, port });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(netchanError(ErrorCodes.CONNECT, `connect to ${options.socketPath ?? `${host}:${port}`} timed out`));
    }, options.connectTimeoutMs ?? 10_000);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(fromNodeError(err, ErrorCodes.CONNECT));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

/**
 * Upgrades an open connection to a WebSocket on the endpoint's path. A refusal (the app's auth
 * answering 401, a server without netchan there) becomes the matching NetchanError.
 */
function openWebSocket(u: URL, socket: net.Socket, options: TransportOptions): Promise<ClientTransport> {
  const wsUrl = new URL(u.href);
  wsUrl.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, WS_SUBPROTOCOL, {
      createConnection: () => socket,
      headers: { 'netchan-version': '1', ...(options.headers ?? {}) },
      perMessageDeflate: false,
      maxPayload: MUX_MAX_MESSAGE,
      handshakeTimeout: options.connectTimeoutMs ?? 10_000,
    });
    const fail = (err: NetchanError): void => {
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      ws.terminate();
      socket.destroy();
      reject(err);
    };
    ws.once('unexpected-response', (_req, res) => {
      const status = res.statusCode ?? 0;
      const code = pick(res.headers['netchan-error']) ?? (status === 401 || status === 403 ? ErrorCodes.UNAUTHORIZED : ErrorCodes.CONNECT);
      const message = pick(res.headers['netchan-message']) ?? `server answered ${status} to the WebSocket upgrade`;
      res.resume();
      fail(netchanError(code, message, { status }));
    });
    ws.once('error', (err) => fail(fromNodeError(err, ErrorCodes.CONNECT)));
    ws.once('open', () => {
      ws.removeAllListeners('error');
      ws.removeAllListeners('unexpected-response');
      if (ws.protocol !== WS_SUBPROTOCOL) return fail(netchanError(ErrorCodes.PROTOCOL, `server did not accept the ${WS_SUBPROTOCOL} subprotocol`));
      resolve(new WsMux(ws, 'client') as unknown as ClientTransport);
    });
  });
}

function pick(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
