/**
 * Connecting from a web page: a WebSocket to the endpoint (the WebSocket fallback,
 * docs/PROTOCOL.md §7), the same mux and session as a Node client's on it.
 */
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';
import { WS_SUBPROTOCOL, bearerSubprotocol } from '../wire/mux-frames.js';
import { WsMux } from '../transport/ws-mux.js';
import type { ConnectOptions } from '../client/options.js';
import { startSession } from '../client/start.js';
import { BrowserCarrier } from './carrier.js';
import { BrowserSession } from './session.js';

/** Options of the browser's {@link connect}. */
export interface BrowserConnectOptions {
  /**
   * A bearer token for the app's auth, offered as a WebSocket subprotocol (a page cannot set
   * headers on a WebSocket, and a URL ends up in logs): the server sees
   * `authorization: Bearer <token>` on the upgrade request. Without it the app's cookie session
   * authenticates the upgrade, as any request of the page.
   */
  token?: string;
  /** Reconnect and resume the session when the connection drops. Default true. */
  reconnect?: boolean;
  /** How long opening the WebSocket may take, in ms. Default 10000. */
  connectTimeoutMs?: number;
  /** Heartbeat interval in ms. Default: what the server asks for. */
  heartbeatIntervalMs?: number;
  /** The session is considered dead after this long without a frame from the server, in ms. Default 3 × heartbeat. */
  idleTimeoutMs?: number;
  /** Largest frame payload accepted, in bytes. Default 1048576 (1 MiB). */
  maxFrameBytes?: number;
  /** Deepest nesting of a value accepted. Default 64. */
  maxDepth?: number;
  /** How long a value may wait for the streams of the references it names. Default 10000 ms. */
  referenceTimeoutMs?: number;
}

/**
 * Connects to a netchan endpoint from a web page and opens a session.
 * @param url the endpoint: `https://host/path`, `wss://host/path`, or a path of the page's own
 *   origin (`'/netchan'`). `http:` and `ws:` only for loopback development.
 */
export async function connect(url: string | URL, options: BrowserConnectOptions = {}): Promise<BrowserSession> {
  const base = (globalThis as { location?: { href: string } }).location?.href;
  let u: URL;
  try {
    u = new URL(url, base);
  } catch {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, `not a URL: ${String(url)}`);
  }
  const schemes: Record<string, string> = { 'https:': 'wss:', 'wss:': 'wss:', 'http:': 'ws:', 'ws:': 'ws:' };
  const scheme = schemes[u.protocol];
  if (!scheme) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `connect needs an https: or wss: URL, got ${u.protocol}`);
  u.protocol = scheme;
  const open = (): Promise<WsMux> => openWebSocket(u, options);
  const wire = await open();
  // a hidden tab's timers fire once a minute at most: the server's PINGs keep its session alive
  const sessionOptions: ConnectOptions = { ...options, transport: 'ws', plainBinary: true, serverPings: true };
  try {
    return await startSession(wire, open, {}, sessionOptions, BrowserSession);
  } catch (err) {
    wire.destroy();
    throw err;
  }
}

/**
 * Opens the WebSocket and makes a mux of it. A page learns nothing of a refused upgrade (no
 * status, no headers): a refusal by the app's auth, the Origin check or a server without netchan
 * there all read as ERR_CONNECT.
 */
function openWebSocket(url: URL, options: BrowserConnectOptions): Promise<WsMux> {
  return new Promise((resolve, reject) => {
    const protocols = [WS_SUBPROTOCOL, ...(options.token !== undefined ? [bearerSubprotocol(options.token)] : [])];
    let ws: WebSocket;
    try {
      ws = new WebSocket(url.href, protocols);
    } catch (err) {
      return reject(netchanError(ErrorCodes.CONNECT, `cannot open a WebSocket to ${url.href}: ${(err as Error).message}`));
    }
    const timeoutMs = options.connectTimeoutMs ?? 10_000;
    const fail = (err: NetchanError): void => {
      clearTimeout(timer);
      ws.onopen = ws.onerror = ws.onclose = null;
      ws.close();
      reject(err);
    };
    const timer = setTimeout(() => fail(netchanError(ErrorCodes.TIMEOUT, `WebSocket to ${url.href} not open within ${timeoutMs} ms`)), timeoutMs);
    const refused = (): void =>
      fail(netchanError(ErrorCodes.CONNECT, `WebSocket to ${url.href} failed: refused (auth, origin, no netchan endpoint there) or unreachable; the browser does not say which`));
    ws.onerror = refused;
    ws.onclose = refused;
    ws.onopen = () => {
      clearTimeout(timer);
      ws.onopen = ws.onerror = ws.onclose = null;
      if (ws.protocol !== WS_SUBPROTOCOL) return fail(netchanError(ErrorCodes.PROTOCOL, `server did not accept the ${WS_SUBPROTOCOL} subprotocol`));
      resolve(new WsMux(new BrowserCarrier(ws), 'client', url));
    };
  });
}

