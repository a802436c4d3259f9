/**
 * `netchan/express`: mount a netchan endpoint on an existing Express app, behind the app's own
 * middleware, and run the app on `node:http2` (with HTTP/1.1 alongside).
 *
 * ```ts
 * const app = express();
 * app.use('/netchan', requireAuth, netchan(server));     // the app's auth decides on every stream
 * app.get('/health', (req, res) => res.send('ok'));      // ordinary routes keep working
 * const httpServer = http2.createSecureServer({ key, cert, allowHTTP1: true, minVersion: 'TLSv1.3' }, app);
 * attach(httpServer, app);                               // makes Express work on HTTP/2
 * httpServer.listen(8443);
 * ```
 *
 * Every netchan stream of a session is one HTTP request through the app's middleware chain, so
 * authentication runs per stream; the principal the app established (see {@link NetchanMiddlewareOptions.principal})
 * binds the session, and a stream naming a session with another principal is refused.
 *
 * A principal is a string; a number becomes its string (`req.user = { id: 42 }` is `'42'`).
 * Anything else the app put there (an object without an `id`, a boolean) is never taken for
 * anonymous: the request goes to the app's error handling (`next(err)`) with a
 * `NetchanError` `ERR_INVALID_ARGUMENT` (status 500), and the client gets that code.
 *
 * Connection timeouts: the app's server owns a connection's TLS handshake and first request
 * (set `handshakeTimeout`, `headersTimeout`, `requestTimeout` on it). Of netchan's own, only
 * `noSessionTimeoutMs` applies, and only to connections that are netchan's: WebSocket ones
 * after their upgrade, and HTTP/2 ones whose every stream was a netchan stream. An HTTP/2
 * connection that carries any request of the app's is never closed by netchan.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Express, NextFunction, Request, Response } from 'express';
import { ErrorCodes, netchanError, type NetchanError } from '../lib/core/errors.js';
import { Headers, refusalBody, refusalHeaders } from '../lib/wire/headers.js';
import { Http2Compat, type Http2AppServer } from '../lib/transport/http2.js';
import { certificatePrincipal } from '../lib/transport/tls.js';
import { adoptSubprotocolToken, offersNetchan } from '../lib/transport/ws-server.js';
import type { NetchanServer } from '../lib/server/server.js';

/** Options of {@link netchan}. */
export interface NetchanMiddlewareOptions {
  /**
   * Who the request is, as the app established it: a string, or a number (which becomes its
   * string). Return `undefined` to use the default: `res.locals.principal` when set, else
   * `req.user.id` when `req.user` is an object, else `req.user` when set, else `cert:<CN>` of
   * the mTLS client certificate, else `''` (anonymous). Any of these that is set but neither a
   * string nor a finite number refuses the request (`next(err)` with a `NetchanError`
   * `ERR_INVALID_ARGUMENT`, status 500): a principal the app meant is never taken for anonymous.
   */
  principal?: (req: Request, res: Response) => string | number | undefined;
}

/** The header every netchan stream carries; requests without it are not netchan's. */
const VERSION_HEADER = Headers.version;

/** Where `attach` leaves an upgrade request's socket and first bytes for the middleware. */
const UPGRADE = Symbol('netchan.upgrade');
type UpgradeRequest = IncomingMessage & { [UPGRADE]?: { socket: Duplex; head: Buffer } };

/** A principal as the app gave it: a string stays, a finite number becomes its string. */
function asPrincipal(value: unknown, where: string): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  const what = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : `a ${typeof value}`;
  throw netchanError(ErrorCodes.INVALID_ARGUMENT, `the principal (${where}) is ${what}, not a string or number`, { status: 500 });
}

/** Who the request is (see {@link NetchanMiddlewareOptions.principal}); throws when the app's answer is no principal. */
function principalOf(req: Request, res: Response, options: NetchanMiddlewareOptions): string {
  const chosen = options.principal?.(req, res);
  if (chosen !== undefined) return asPrincipal(chosen, 'the principal option');
  const local = (res.locals as Record<string, unknown>).principal;
  if (local !== undefined && local !== null) return asPrincipal(local, 'res.locals.principal');
  const user = (req as Request & { user?: unknown }).user;
  if (user !== undefined && user !== null) {
    return typeof user === 'object' && !Array.isArray(user) ? asPrincipal((user as { id?: unknown }).id, 'req.user.id') : asPrincipal(user, 'req.user');
  }
  return certificatePrincipal(req.socket);
}

/**
 * Express middleware that hands netchan streams to `server` and passes everything else on
 * (`next()`). Put the app's authentication before it. HTTP/2 requests are netchan streams;
 * HTTP/1.1 WebSocket upgrades (routed through the app by {@link attach}) become the WebSocket
 * fallback, every stream of it with the principal of the upgrade request; any other HTTP/1.1
 * netchan request is answered `426`.
 */
export function netchan(server: NetchanServer, options: NetchanMiddlewareOptions = {}) {
  if (options.principal !== undefined && typeof options.principal !== 'function') {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'the principal option must be a function (req, res) => string | number | undefined');
  }
  return function netchanMiddleware(req: Request, res: Response, next: NextFunction): void {
    // netchan's requests name the protocol version; a browser's WebSocket, by its subprotocol
    if (req.headers[VERSION_HEADER] === undefined && !((req as unknown as UpgradeRequest)[UPGRADE] && offersNetchan(req))) return next();
    let principal: string;
    try {
      principal = principalOf(req, res, options);
    } catch (err) {
      // the app's error handling sees the misconfiguration; the client sees the code
      const { code, message } = err as NetchanError;
      res.set(refusalHeaders(code, message));
      return next(err);
    }
    const upgrade = (req as unknown as UpgradeRequest)[UPGRADE];
    if (upgrade) {
      // the socket leaves the response's hands: the WebSocket handshake writes to it directly
      (res as unknown as ServerResponse).detachSocket(upgrade.socket as Socket);
      server.handleUpgrade(req, upgrade.socket, upgrade.head, { principal });
      return;
    }
    const stream = server.appStream(req);
    if (!stream) {
      const message = 'netchan over HTTP/1.1 needs a WebSocket upgrade (or HTTP/2)';
      res.status(426).set({ ...refusalHeaders(ErrorCodes.PROTOCOL, message), upgrade: 'websocket' }).send(refusalBody(ErrorCodes.PROTOCOL, message));
      return;
    }
    // The stream goes to netchan as it is: its headers (":path" included) are the originals.
    server.handleStream(stream, { principal });
  };
}

type ExpressApp = Express & {
  handle(req: IncomingMessage, res: ServerResponse, next?: (err?: unknown) => void): void;
};

/**
 * Makes `app` work on `httpServer` for HTTP/2 requests as well as HTTP/1.1 ones. Express sets its
 * own prototypes on every request and response, built on `http.IncomingMessage` and
 * `http.ServerResponse`; that strips an HTTP/2 request of what the compatibility API gives it.
 * For HTTP/2 requests, `attach` lends Express prototypes with the same methods built on
 * `Http2ServerRequest` and `Http2ServerResponse`. It also routes HTTP/1.1 WebSocket upgrades
 * through the app (for netchan's WebSocket fallback): every upgrade request on `httpServer` goes
 * to `app`, and one the app does not take gets the app's answer (404). Call it once, before
 * `listen`; works on `node:http`/`node:https` servers too. Apps mounted inside `app` as
 * sub-apps are not covered for HTTP/2 yet (routers are).
 */
export function attach(httpServer: Http2AppServer | http.Server | https.Server, app: Express): void {
  const a = app as ExpressApp;
  if ((a as { netchanAttached?: boolean }).netchanAttached) return;
  (a as { netchanAttached?: boolean }).netchanAttached = true;
  const h2Request = rebase(a.request, Http2Compat.Request.prototype);
  const h2Response = rebase(a.response, Http2Compat.Response.prototype);
  // Express reads the host from the Host header, which HTTP/2 replaces with :authority.
  Object.defineProperty(h2Request, 'host', {
    configurable: true,
    get(this: InstanceType<typeof Http2Compat.Request>) {
      return this.headers['x-forwarded-host'] ?? this.authority ?? this.headers.host;
    },
  });
  const handle = a.handle;
  a.handle = function (this: ExpressApp, req, res, next) {
    if (!(req instanceof Http2Compat.Request)) return handle.call(this, req, res, next);
    // Express applies `this.request` / `this.response` synchronously at the start of handle().
    const saved = [this.request, this.response] as const;
    this.request = h2Request as typeof this.request;
    this.response = h2Response as typeof this.response;
    try {
      return handle.call(this, req, res, next);
    } finally {
      [this.request, this.response] = saved;
    }
  };
  // WebSocket upgrades go through the app like any request, so its auth runs on them; what the
  // app does not take (no netchan mount there) gets the app's own answer, and the socket closes.
  httpServer.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => undefined);
    // a browser's token (it cannot set headers on a WebSocket) is the app's authorization header
    adoptSubprotocolToken(req);
    const res = new http.ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket as Socket);
    res.once('finish', () => socket.end());
    (req as UpgradeRequest)[UPGRADE] = { socket, head };
    a.handle(req, res);
  });
}

/** A copy of Express's prototype chain (app-level object and express's own) on another base. */
function rebase(appProto: object, base: object): object {
  const expressProto = Object.getPrototypeOf(appProto) as object;
  const rebased = Object.create(base, Object.getOwnPropertyDescriptors(expressProto)) as object;
  return Object.create(rebased, Object.getOwnPropertyDescriptors(appProto)) as object;
}
