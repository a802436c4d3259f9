/**
 * The client's TLS connection: TLS 1.3 minimum, certificate verification always on, and an
 * optional SHA-256 pin. The handshake and its checks finish before HTTP/2 sends a byte, so no
 * header (a bearer token, say) ever reaches a server that failed verification.
 */
import tls from 'node:tls';
import { ErrorCodes, fromNodeError, netchanError, type NetchanError } from '../core/errors.js';

/** TLS options of `connect`. */
export interface ClientTlsOptions {
  /** CA certificate(s) to trust (PEM), in addition to nothing: when given, only these are trusted. */
  ca?: string | Buffer | (string | Buffer)[];
  /**
   * SHA-256 fingerprint of the server certificate (hex, with or without colons, any case).
   * With a pin and no `ca`, the pin alone decides trust; with both, both must pass.
   */
  pin?: string;
  /** Client certificate and key for mTLS (PEM). */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** Server name to verify, when it differs from the URL's host. */
  servername?: string;
  /** Connection timeout in milliseconds. Default 10000. */
  connectTimeoutMs?: number;
}

/** Normalises a fingerprint to Node's `fingerprint256` form: uppercase hex pairs joined by colons. */
export function normalizeFingerprint(pin: string): string {
  const hex = pin.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  if (hex.length !== 64) throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'pin must be a SHA-256 fingerprint (64 hex digits)');
  return hex.match(/../g)!.join(':');
}

/** Secure contexts by their trust and identity material: building one costs about 0.5 ms. */
const contexts = new Map<string, tls.SecureContext>();
const MAX_CONTEXTS = 32;

/**
 * The secure context for these options, shared by every connection made with the same `ca`,
 * `cert` and `key` (a process that dials thousands of times builds it once).
 */
function secureContextFor(options: ClientTlsOptions): tls.SecureContext {
  const text = (v: string | Buffer | (string | Buffer)[] | undefined): string =>
    v === undefined ? '' : Array.isArray(v) ? v.map((x) => text(x)).join('\0') : Buffer.isBuffer(v) ? v.toString('latin1') : v;
  const key = `${text(options.ca)}\u0001${text(options.cert)}\u0001${text(options.key)}`;
  let context = contexts.get(key);
  if (!context) {
    context = tls.createSecureContext({ ca: options.ca, cert: options.cert, key: options.key, minVersion: 'TLSv1.3' });
    if (contexts.size >= MAX_CONTEXTS) contexts.delete(contexts.keys().next().value as string);
    contexts.set(key, context);
  }
  return context;
}

/**
 * Opens a verified TLS 1.3 connection offering the ALPN protocols in `alpn` (default `h2`; none
 * when `alpn` is `undefined` in the options object given explicitly). The server must pick one
 * of them when any are offered, except that `http/1.1` also accepts a server that picks none.
 */
export function connectTls(host: string, port: number, options: ClientTlsOptions & { alpn?: string[] }): Promise<tls.TLSSocket> {
  const alpn = 'alpn' in options ? options.alpn : ['h2'];
  const pin = options.pin === undefined ? undefined : normalizeFingerprint(options.pin);
  const pinOnly = pin !== undefined && options.ca === undefined;
  const servername = options.servername ?? (isIp(host) ? undefined : host);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      servername,
      ALPNProtocols: alpn,
      minVersion: 'TLSv1.3',
      // ca, cert and key, built once per distinct set
      ...(options.ca !== undefined || options.cert !== undefined || options.key !== undefined ? { secureContext: secureContextFor(options) } : {}),
      // With a pin and no CA the chain cannot verify against a trust store; the pin is then
      // checked below, before the socket is used. In every other case Node verifies the chain.
      rejectUnauthorized: !pinOnly,
    });
    socket.setNoDelay(true); // acks and credits are small writes that must not wait for Nagle
    const timer = setTimeout(() => fail(netchanError(ErrorCodes.CONNECT, `TLS connect to ${host}:${port} timed out`)), options.connectTimeoutMs ?? 10_000);
    let settled = false;
    const fail = (err: NetchanError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', (err) => fail(fromNodeError(err, ErrorCodes.CONNECT)));
    socket.once('secureConnect', () => {
      const picked = socket.alpnProtocol;
      if (alpn && !(picked ? alpn.includes(picked) : alpn.includes('http/1.1'))) {
        return fail(netchanError(ErrorCodes.PROTOCOL, `server did not negotiate ${alpn.join(' or ')} (ALPN)`));
      }
      if (pin !== undefined) {
        const actual = socket.getPeerCertificate().fingerprint256;
        if (actual !== pin) return fail(netchanError(ErrorCodes.PIN_MISMATCH, `server certificate ${actual} does not match the pin ${pin}`));
      }
      if (!pinOnly && !socket.authorized) {
        return fail(netchanError(ErrorCodes.TLS, `server certificate not trusted: ${String(socket.authorizationError)}`));
      }
      settled = true;
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
  });
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/**
 * The principal of a connection's verified TLS client certificate (mTLS): `cert:<CN>`, or `''`
 * when there is none (no certificate asked for or given, or it did not verify).
 */
export function certificatePrincipal(socket: unknown): string {
  const s = socket as { authorized?: boolean; getPeerCertificate?: () => { subject?: { CN?: string } } | undefined } | undefined;
  if (s?.authorized && typeof s.getPeerCertificate === 'function') {
    const cn = s.getPeerCertificate()?.subject?.CN;
    if (cn) return `cert:${cn}`;
  }
  return '';
}
