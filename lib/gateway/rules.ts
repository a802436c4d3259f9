/**
 * The gateway's policy: allow rules per principal, compiled once, and the verdict on one resolved
 * address of one requested target. Deny by default.
 */
import net from 'node:net';
import { debug } from '../core/debug.js';
import { ErrorCodes, netchanError } from '../core/errors.js';
import { canonicalIp, familyOf, specialAddressKind } from './addresses.js';

/** What a policy function is asked about: one resolved address of one requested target. */
export interface GatewayTargetRequest {
  /** The session's principal (`cert:<CN>`, what the app's auth set, `''` when anonymous). */
  principal: string;
  /** The host as the client named it (a name or an IP literal, without brackets). */
  host: string;
  port: number;
  /** One address `host` resolved to (the one that would be connected to). */
  address: string;
  family: 4 | 6;
}

/**
 * One allow rule:
 * - a string `HOST:PORT`: HOST is `*`, a name (`db.internal`; `*.svc.local` for any name under
 *   it), an IP address (`10.0.0.5`, `[fd00::5]`) or a CIDR range (`10.0.0.0/8`, `[fd00::/8]`);
 *   PORT is a number, a range `5000-5999`, or `*`;
 * - a function of the request (called once per resolved address), true to allow.
 *
 * Only a rule naming the IP address or a range containing it allows a special address
 * (loopback, link-local, cloud metadata, unspecified, multicast; see {@link specialAddressKind}):
 * `*`, names and functions never do, so a name cannot smuggle one in.
 */
export type GatewayTargetRule = string | ((request: GatewayTargetRequest) => boolean);

/** A rule for some principals only: `principal` is a principal, a list, or a predicate. */
export interface GatewayPrincipalRule {
  principal: string | string[] | ((principal: string) => boolean);
  allow: GatewayTargetRule | GatewayTargetRule[];
}

/** A rule of {@link GatewayOptions.allow}: for every principal, or for some. */
export type GatewayRule = GatewayTargetRule | GatewayPrincipalRule;

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  /**
   * What may be reached. Deny by default: a target is allowed only when a rule allows one of the
   * addresses it resolves to (see {@link GatewayTargetRule}). Rules without a principal apply to
   * every session, anonymous ones included.
   */
  allow: GatewayRule | GatewayRule[];
  /** TCP connections one session may have open at once. Default 256. */
  maxConnectionsPerSession?: number;
  /** TCP connections one principal may have open at once, over all its sessions. Default 1024. */
  maxConnectionsPerPrincipal?: number;
  /** How long the server tries to connect to a target, per address, in ms. Default 10000. */
  connectTimeoutMs?: number;
  /** A connection with no bytes either way for this long is reset, in ms. 0: never. Default 3600000 (1 h). */
  idleTimeoutMs?: number;
  /** Resolves a name to its addresses. Default: `dns.lookup` (the system resolver, hosts file included). */
  lookup?: (host: string) => Promise<{ address: string; family: number }[]>;
}

/** Defaults of {@link GatewayOptions}. */
export const GATEWAY_DEFAULTS = {
  maxConnectionsPerSession: 256,
  maxConnectionsPerPrincipal: 1024,
  connectTimeoutMs: 10_000,
  idleTimeoutMs: 3_600_000,
} as const;

export interface CompiledRule {
  principal?: (principal: string) => boolean;
  test: GatewayTargetRule;
  /** Parsed form of a string rule. */
  host?: { kind: 'any' } | { kind: 'name'; name: string; suffix: boolean } | { kind: 'ip'; list: net.BlockList };
  ports?: [number, number];
}

function compilePort(text: string, rule: string): [number, number] {
  if (text === '*') return [1, 65535];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || lo < 1 || hi > 65535 || lo > hi) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `bad port in gateway rule ${JSON.stringify(rule)}`);
  return [lo, hi];
}

function compileTarget(rule: GatewayTargetRule, principal?: (p: string) => boolean): CompiledRule {
  if (typeof rule === 'function') return { principal, test: rule };
  if (typeof rule !== 'string') throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'a gateway rule is a HOST:PORT string or a function');
  const m = /^(?:\[([0-9a-fA-F:.]+(?:\/\d{1,3})?)\]|([^\s:[\]]+)):([\d*-]+)$/.exec(rule);
  if (!m) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `gateway rule must be HOST:PORT, got ${JSON.stringify(rule)}`);
  const hostText = (m[1] ?? m[2])!;
  const ports = compilePort(m[3]!, rule);
  const [ipText, prefixText] = hostText.split('/') as [string, string | undefined];
  if (hostText === '*') return { principal, test: rule, host: { kind: 'any' }, ports };
  if (net.isIP(ipText)) {
    const ip = canonicalIp(ipText);
    const type = familyOf(ip);
    const max = type === 'ipv4' ? 32 : 128;
    const prefix = prefixText === undefined ? max : Number(prefixText);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw netchanError(ErrorCodes.INVALID_ARGUMENT, `bad prefix in gateway rule ${JSON.stringify(rule)}`);
    const list = new net.BlockList();
    list.addSubnet(ip, prefix, type);
    return { principal, test: rule, host: { kind: 'ip', list }, ports };
  }
  if (prefixText !== undefined || !/^(\*\.)?[a-zA-Z0-9_]([a-zA-Z0-9_.-]*[a-zA-Z0-9_])?\.?$/.test(hostText)) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, `bad host in gateway rule ${JSON.stringify(rule)}`);
  }
  const suffix = hostText.startsWith('*.');
  const name = normalizeName(suffix ? hostText.slice(1) : hostText);
  return { principal, test: rule, host: { kind: 'name', name, suffix }, ports };
}

function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

export function compileRules(allow: GatewayRule | GatewayRule[]): CompiledRule[] {
  if (allow === undefined) throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'gateway needs allow rules (deny by default: an empty list allows nothing)');
  const out: CompiledRule[] = [];
  for (const rule of Array.isArray(allow) ? allow : [allow]) {
    if (typeof rule === 'object' && rule !== null && 'principal' in rule) {
      const p = rule.principal;
      const matches = typeof p === 'function' ? p : Array.isArray(p) ? (x: string) => p.includes(x) : (x: string) => x === p;
      for (const t of Array.isArray(rule.allow) ? rule.allow : [rule.allow]) out.push(compileTarget(t, matches));
    } else {
      out.push(compileTarget(rule as GatewayTargetRule));
    }
  }
  return out;
}

/** The verdict on one resolved address. */
export interface Verdict {
  allowed: boolean;
  /** Why not, when a name rule matched but the address is special. */
  special?: string;
}

export function judge(rules: CompiledRule[], request: GatewayTargetRequest): Verdict {
  const address = canonicalIp(request.address);
  const special = specialAddressKind(address);
  const host = normalizeName(request.host);
  let nameMatched = false;
  for (const rule of rules) {
    if (rule.principal && !safely(() => rule.principal!(request.principal))) continue;
    if (typeof rule.test === 'function') {
      const fn = rule.test;
      if (safely(() => fn({ ...request, address }))) {
        if (!special) return { allowed: true };
        nameMatched = true;
      }
      continue;
    }
    const [lo, hi] = rule.ports!;
    if (request.port < lo || request.port > hi) continue;
    const h = rule.host!;
    if (h.kind === 'ip') {
      if (h.list.check(address, familyOf(address))) return { allowed: true };
      continue;
    }
    const matches = h.kind === 'any' || (h.suffix ? host.endsWith(h.name) && host.length > h.name.length : host === h.name);
    if (!matches) continue;
    if (!special) return { allowed: true };
    nameMatched = true;
  }
  return nameMatched ? { allowed: false, special } : { allowed: false };
}

function safely(fn: () => boolean): boolean {
  try {
    return fn() === true;
  } catch (err) {
    debug('gateway policy threw: %s', (err as Error).message);
    return false;
  }
}
