/**
 * Which web pages may open sessions: the `Origin` a browser sends with every WebSocket upgrade
 * (and with a cross-origin `fetch`), checked against the server's `allowedOrigins`. Without the
 * check, another site's page could open a WebSocket to the app in a visitor's browser, with the
 * visitor's cookies, and use their session (cross-site WebSocket hijacking).
 */
import { debug } from '../core/debug.js';
import { ErrorCodes, netchanError, type NetchanError } from '../core/errors.js';

/**
 * Which `Origin`s may open netchan streams. `'same-origin'` (the default): a request with an
 * `Origin` is served only when its host (and port) is the request's own `Host` (or
 * `X-Forwarded-Host`, behind a proxy), and, over TLS, its scheme `https`; a list: exactly these origins (`https://app.example.com`,
 * scheme, host and port) or those a RegExp matches; a function decides (one that throws refuses);
 * `'*'` allows any page.
 * Requests without an `Origin` (programs, not browsers) are always served: the check is about
 * which pages may use a visitor's browser, and its cookies, to reach the server.
 */
export type OriginPolicy = 'same-origin' | '*' | readonly (string | RegExp)[] | ((origin: string) => boolean);

/** Checks an OriginPolicy option when the server is created; throws ERR_INVALID_ARGUMENT. */
export function checkOriginPolicy(policy: unknown): OriginPolicy {
  if (policy === undefined) return 'same-origin';
  if (policy === 'same-origin' || policy === '*' || typeof policy === 'function') return policy as OriginPolicy;
  if (Array.isArray(policy) && policy.every((o) => o instanceof RegExp || (typeof o === 'string' && o !== ''))) {
    for (const o of policy as (string | RegExp)[]) checkEntry(o);
    return policy as OriginPolicy;
  }
  throw netchanError(ErrorCodes.INVALID_ARGUMENT, "allowedOrigins must be 'same-origin', '*', a list of origins (strings or RegExps) or a function");
}

/**
 * A list entry must be able to match: a string compares exactly, so it must be an origin as a
 * browser sends it; a RegExp must not be `g` or `y`, whose `test` goes on from the last match.
 */
function checkEntry(entry: string | RegExp): void {
  if (entry instanceof RegExp) {
    if (entry.global || entry.sticky) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `allowedOrigins: ${String(entry)} has the g or y flag, and would match only every other time`);
    return;
  }
  let origin: string | undefined;
  try {
    origin = new URL(entry).origin;
  } catch {
    // not a URL
  }
  if (origin === entry) return;
  // `null` is every sandboxed frame's and file: page's: allowing it allows any site
  const spelled = origin && origin !== 'null' ? ` (a browser sends ${origin})` : '';
  throw netchanError(ErrorCodes.INVALID_ARGUMENT, `allowedOrigins: ${entry.slice(0, 200)} is no origin as browsers send it: scheme://host[:port], lower case, no default port, no path${spelled}`);
}

/**
 * Undefined when a request with these headers may be served, else the 403 ERR_FORBIDDEN_ORIGIN
 * to refuse it with. `host` is the request's `Host` (HTTP/1.1) or `:authority` (HTTP/2); `tls`
 * whether it came over TLS (false when the server cannot tell, behind a TLS-terminating proxy).
 */
export function originRefusal(policy: OriginPolicy, origin: string | undefined, host: string | undefined, forwardedHost: string | undefined, tls = false, loopback = false): NetchanError | undefined {
  if (origin === undefined) return undefined;
  if (policy === 'same-origin' && rebound(host, forwardedHost, tls, loopback)) {
    return netchanError(ErrorCodes.FORBIDDEN_ORIGIN, `a page of ${origin.slice(0, 200)} reached a plaintext loopback server by the name ${String(host).slice(0, 200)} (DNS rebinding?): name the pages in allowedOrigins`, { status: 403 });
  }
  if (allowed(policy, origin, host, forwardedHost, tls)) return undefined;
  return netchanError(ErrorCodes.FORBIDDEN_ORIGIN, `origin ${origin.slice(0, 200)} is not allowed (allowedOrigins)`, { status: 403 });
}

/**
 * Same-origin compares the page with the request's Host, which a DNS-rebinding page makes its
 * own: its name now resolves to this machine, so Origin and Host agree. TLS stops it (the
 * certificate does not name the attacker's host); a plaintext server bound to loopback and
 * reached by a name that is not loopback's, with no proxy in between (no `X-Forwarded-Host`),
 * is that attack, or a setup that must name its pages in `allowedOrigins`.
 */
function rebound(host: string | undefined, forwardedHost: string | undefined, tls: boolean, loopback: boolean): boolean {
  if (tls || !loopback || forwardedHost !== undefined) return false;
  const name = hostOf('http:', host ?? '');
  if (name === undefined) return true;
  const hostname = new URL(`http://${name}`).hostname;
  return !(hostname === 'localhost' || hostname.endsWith('.localhost') || isLoopbackAddress(hostname.replace(/^\[|\]$/g, '')));
}

/** Whether `address` is 127.0.0.0/8, ::1 or an IPv4-mapped loopback address. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (address === undefined) return false;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4) || address === '::1';
}

function allowed(policy: OriginPolicy, origin: string, host: string | undefined, forwardedHost: string | undefined, tls: boolean): boolean {
  if (policy === '*') return true;
  if (typeof policy === 'function') {
    // a policy that throws on an Origin it did not expect (`new URL('null')`) refuses it: the
    // throw would otherwise leave an upgrade handler and end the process
    try {
      return policy(origin) === true;
    } catch (err) {
      debug('allowedOrigins threw: %s', (err as Error).message);
      return false;
    }
  }
  if (policy !== 'same-origin') return policy.some((o) => (typeof o === 'string' ? o === origin : o.test(origin)));
  // `null` (a sandboxed frame, a file: page) and anything unparsable is no one's own origin
  let page: URL;
  try {
    page = new URL(origin);
  } catch {
    return false;
  }
  // a plain http page is written by anyone on its network path: not a TLS server's own
  if (page.host === '' || (tls && page.protocol !== 'https:')) return false;
  return [host, forwardedHost?.split(',')[0]?.trim()].some((h) => h && hostOf(page.protocol, h) === page.host);
}

/**
 * A Host header's host as a URL of `scheme` spells it: lower case, without the scheme's default
 * port (`app.example:443`, as a proxy's `$host:$server_port` sends it, is `app.example`), IPv6
 * compressed. Undefined for one that is not just a host and a port.
 */
function hostOf(scheme: string, host: string): string | undefined {
  try {
    const url = new URL(`${scheme}//${host}`);
    return url.username === '' && url.password === '' && url.pathname === '/' && url.search === '' && url.hash === '' ? url.host : undefined;
  } catch {
    return undefined;
  }
}
