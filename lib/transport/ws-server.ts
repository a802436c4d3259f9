/**
 * The server side of the WebSocket fallback (docs/PROTOCOL.md §7): takes over an HTTP/1.1
 * upgrade request and makes a {@link WsMux} of it, whose streams are the server's wire streams.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { debug } from '../core/debug.js';
import { ErrorCodes } from '../core/errors.js';
import { Headers, PROTOCOL_VERSION, http1Refusal } from '../wire/headers.js';
import { MUX_MAX_MESSAGE, WS_SUBPROTOCOL, bearerOfSubprotocols } from '../wire/mux-frames.js';
import { ServerConnection, type ConnectionTimeouts } from './connections.js';
import { WsMux, type MuxStream } from './ws-mux.js';

/** The subprotocols a WebSocket upgrade request offers. */
function offeredSubprotocols(req: http.IncomingMessage): string[] {
  return String(req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
}

/** Whether an upgrade request offers the netchan subprotocol (a browser's has no version header). */
export function offersNetchan(req: http.IncomingMessage): boolean {
  return offeredSubprotocols(req).includes(WS_SUBPROTOCOL);
}

/**
 * A browser's bearer token, offered as a subprotocol (docs/PROTOCOL.md §7.1), becomes the upgrade
 * request's `authorization: Bearer …` header, so that the app's auth (or `authenticate`) sees it
 * as it sees a Node client's. A request that has its own `authorization` header keeps it; one
 * that does not offer `netchan.v1` is not netchan's, and gets none (a page could otherwise set
 * the header, which it never can on a WebSocket, on the app's other routes).
 */
export function adoptSubprotocolToken(req: http.IncomingMessage): void {
  if (req.headers.authorization !== undefined) return;
  const offered = offeredSubprotocols(req);
  if (!offered.includes(WS_SUBPROTOCOL)) return;
  const token = bearerOfSubprotocols(offered);
  if (token !== undefined) req.headers.authorization = `Bearer ${token}`;
}

/** Accepts WebSocket upgrades for one server; keeps the muxes open now. */
export class WebSocketAcceptor {
  private wss: WebSocketServer | null = null;
  private readonly muxes = new Set<WsMux>();

  constructor(private readonly timeouts: ConnectionTimeouts) {}

  /**
   * Upgrades `req` to a mux, or answers it with a refusal and closes the socket: a request
   * with a `netchan-version` other than 1, not a WebSocket upgrade, or not offering the
   * subprotocol.
   * Each stream the client opens on the mux goes to `onStream`.
   */
  accept(req: http.IncomingMessage, socket: Duplex, head: Buffer, onStream: (stream: MuxStream) => void): void {
    const reject = (status: number, code: string, message: string): void => {
      socket.end(http1Refusal(status, http.STATUS_CODES[status] ?? '', code, message));
    };
    // a browser cannot send the version header: the subprotocol names the version too
    const version = req.headers[Headers.version];
    if (version !== undefined && version !== PROTOCOL_VERSION) return reject(400, ErrorCodes.PROTOCOL, `unsupported netchan-version ${String(version)}`);
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return reject(426, ErrorCodes.PROTOCOL, 'netchan over HTTP/1.1 needs a WebSocket upgrade');
    if (!offersNetchan(req)) return reject(400, ErrorCodes.PROTOCOL, `WebSocket subprotocol ${WS_SUBPROTOCOL} required`);
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
      mux.on('stream', (stream: MuxStream) => {
        stream.on('error', (err) => debug('mux stream error: %s', err.message));
        onStream(stream);
      });
    });
  }

  /** Closes every mux once its streams are done. */
  close(): void {
    for (const mux of this.muxes) void mux.close();
  }

  /** Drops every mux at once. */
  destroy(): void {
    for (const mux of this.muxes) mux.destroy();
  }
}
