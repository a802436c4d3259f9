/**
 * A client's way to a server: TCP or TLS to the URL, then HTTP/2 (ALPN `h2`, or h2c when
 * `insecure`) or the WebSocket fallback on the same connection; either way a
 * {@link ClientWireSession} of the transport contract.
 */
import net from 'node:net';
import { WebSocket } from 'ws';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';
import { Headers, PROTOCOL_VERSION, header, refusal } from '../wire/headers.js';
import type { ClientWireSession } from './contract.js';
import { openHttp2 } from './http2.js';
import { connectTls, type ClientTlsOptions } from './tls.js';
import { MUX_MAX_MESSAGE, WS_SUBPROTOCOL, WsMux } from './ws-mux.js';

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


/**
 * Connects to `url` over the transport asked for. With `auto`, TLS offers ALPN `h2` and
 * `http/1.1`: HTTP/2 when the server picks it, otherwise a WebSocket on the same connection.
 */
export async function openTransport(u: URL, choice: TransportChoice, options: TransportOptions): Promise<ClientWireSession> {
  const secure = u.protocol === 'https:';
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || (secure ? 443 : 80));
  if (!secure) {
    const socket = await connectPlain(host, port, options);
    if (choice === 'ws') return openWebSocket(u, socket, options);
    return openHttp2(u, socket);
  }
  // A WebSocket client offers no ALPN: HTTP/1.1 is then the default, and servers that speak
  // only HTTP/2 with ALPN (a standalone netchan server) treat the connection as HTTP/1.1.
  const alpn = choice === 'h2' ? ['h2'] : choice === 'ws' ? undefined : ['h2', 'http/1.1'];
  const socket = await connectTls(host, port, { ...options, alpn });
  if (socket.alpnProtocol === 'h2') return openHttp2(u, socket);
  return openWebSocket(u, socket, options);
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
function openWebSocket(u: URL, socket: net.Socket, options: TransportOptions): Promise<WsMux> {
  const wsUrl = new URL(u.href);
  wsUrl.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, WS_SUBPROTOCOL, {
      createConnection: () => socket,
      headers: { [Headers.version]: PROTOCOL_VERSION, ...(options.headers ?? {}) },
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
      const message = header(res.headers, Headers.message) === undefined ? { [Headers.message]: `server answered ${status} to the WebSocket upgrade` } : {};
      res.resume();
      fail(refusal(status, { ...res.headers, ...message }, ErrorCodes.CONNECT));
    });
    ws.once('error', (err) => fail(fromNodeError(err, ErrorCodes.CONNECT)));
    ws.once('open', () => {
      ws.removeAllListeners('error');
      ws.removeAllListeners('unexpected-response');
      if (ws.protocol !== WS_SUBPROTOCOL) return fail(netchanError(ErrorCodes.PROTOCOL, `server did not accept the ${WS_SUBPROTOCOL} subprotocol`));
      resolve(new WsMux(ws, 'client', u));
    });
  });
}
