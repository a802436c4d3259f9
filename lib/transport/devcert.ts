/**
 * Development certificates made in pure JS (no openssl CLI): a throwaway CA plus a server
 * certificate (and optionally a client certificate for mTLS) signed by it. Meant for tests,
 * benchmarks and zero-config local servers, never for production trust.
 *
 * Over 400 lines: certificate making, the per-user directory and its locking belong together.
 */
import { X509Certificate, KeyObject, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import type * as X509 from '@peculiar/x509';
import { ErrorCodes, netchanError } from '../core/errors.js';

/** A CA and the certificates it signed, all PEM encoded. */
export interface DevCertificates {
  /** The development CA certificate: what clients pass as `ca` to trust the server. */
  caCert: string;
  /** The CA private key (PKCS#8 PEM). Only needed to sign more certificates. */
  caKey: string;
  /** The server certificate, signed by the CA. */
  cert: string;
  /** The server private key (PKCS#8 PEM). */
  key: string;
  /** The client certificate for mTLS (when a `clientName` was given), signed by the CA. */
  clientCert?: string;
  /** The client private key (PKCS#8 PEM), when a `clientName` was given. */
  clientKey?: string;
  /**
   * SHA-256 fingerprint of the server certificate's DER, upper-case hex pairs joined by ':'
   * (the format of Node's `X509Certificate.fingerprint256`), e.g. for pinning.
   */
  fingerprint: string;
}

/** Options of {@link generateCertificates} and {@link ensureDevCertificates}. */
export interface DevCertificateOptions {
  /**
   * Names the server certificate is valid for: IP addresses become IP SANs, anything else DNS
   * SANs. Default `['localhost', '127.0.0.1', '::1']`.
   */
  hosts?: string[];
  /** When given, also make a client certificate with this common name (for mTLS). */
  clientName?: string;
  /** How many days the certificates stay valid. Default 825 (the longest Apple platforms accept). */
  validDays?: number;
}

/** The result of {@link ensureDevCertificates}. */
export type EnsuredDevCertificates = DevCertificates & {
  /** The absolute directory the files live in. */
  dir: string;
  /** `true` when the certificates were generated (and written) by this call, `false` when loaded. */
  created: boolean;
};

const DEFAULT_HOSTS = ['localhost', '127.0.0.1', '::1'];
const DEFAULT_VALID_DAYS = 825;
const CA_NAME = 'netchan development CA';
const DAY_MS = 24 * 60 * 60 * 1000;
/** Certificates closer than this to expiry are replaced rather than loaded. */
const RENEW_BEFORE_MS = 7 * DAY_MS;
/** Back-dating absorbs clock skew between the machine that made a certificate and its peers. */
const BACKDATE_MS = 60 * 60 * 1000;
/** A lock older than this was left by a process that died mid-generation (which takes milliseconds). */
const LOCK_STALE_MS = 30_000;
const LOCK_WAIT_MS = 60_000;

const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' };

const FILES = {
  caCert: 'ca.pem',
  caKey: 'ca-key.pem',
  cert: 'server.pem',
  key: 'server-key.pem',
  clientCert: 'client.pem',
  clientKey: 'client-key.pem',
} as const;

interface ResolvedOptions {
  hosts: string[];
  clientName: string | undefined;
  validDays: number;
}

let x509Loaded: Promise<typeof X509> | undefined;

/**
 * Loads @peculiar/x509 on first use. Lazily, because it needs a Reflect metadata polyfill (its
 * dependency tsyringe throws at import without one) and that polyfill patches the global
 * `Reflect`: applications that import netchan but never make certificates keep a pristine global.
 */
function loadX509(): Promise<typeof X509> {
  x509Loaded ??= (async () => {
    await import('reflect-metadata');
    const x509 = await import('@peculiar/x509');
    x509.cryptoProvider.set(webcrypto as unknown as Crypto);
    return x509;
  })().catch((err: unknown) => {
    x509Loaded = undefined;
    throw err;
  });
  return x509Loaded;
}

/**
 * Makes a fresh development CA (ECDSA P-256) and a server certificate signed by it for
 * `options.hosts`; with `options.clientName`, also a client certificate for mTLS.
 *
 * Nothing is written to disk; see {@link ensureDevCertificates} for a cached set.
 * @throws NetchanError `ERR_INVALID_ARGUMENT` for bad options (empty `hosts`, bad host name,
 *   empty `clientName`, non-positive `validDays`).
 */
export async function generateCertificates(options: DevCertificateOptions = {}): Promise<DevCertificates> {
  return generate(resolveOptions(options));
}

/**
 * The SHA-256 fingerprint of a PEM certificate, as upper-case hex pairs joined by ':' (Node's
 * `X509Certificate.fingerprint256` format).
 * @throws NetchanError `ERR_INVALID_ARGUMENT` when `pem` is not a certificate.
 */
export function certificateFingerprint(pem: string): string {
  return parseCertificate(pem).fingerprint256;
}

/**
 * Returns the development certificates kept in `dir`, generating and writing them first when
 * they are missing, unreadable, not a consistent set, expiring within 7 days, not valid for
 * `options.hosts`, or (with `options.clientName`) lack a client certificate for that name.
 *
 * Files: `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`, and `client.pem`,
 * `client-key.pem` with a `clientName`. A new directory is made with mode 0o700 and key files
 * get mode 0o600. Each file is replaced atomically (temp file + rename), and generation is
 * serialized through a lock file, so concurrent processes never read half a file nor end up with
 * certificates from two different CAs.
 * @throws NetchanError `ERR_INVALID_ARGUMENT` for bad options (see {@link generateCertificates});
 *   `ERR_TIMEOUT` when another process holds the lock for too long; file system errors as is.
 */
export async function ensureDevCertificates(
  dir: string,
  options: DevCertificateOptions = {},
): Promise<EnsuredDevCertificates> {
  // Validated before touching the disk, so bad options fail even when valid files exist.
  const resolved = resolveOptions(options);
  const absDir = path.resolve(dir);

  const existing = await load(absDir, resolved);
  if (existing) return { ...existing, dir: absDir, created: false };

  await mkdir(absDir, { recursive: true, mode: 0o700 });
  const release = await acquireLock(absDir);
  try {
    // Another process may have generated the set while this one waited for the lock.
    const raced = await load(absDir, resolved);
    if (raced) return { ...raced, dir: absDir, created: false };

    const certs = await generate(resolved);
    await writeAtomically(path.join(absDir, FILES.caKey), certs.caKey, 0o600);
    await writeAtomically(path.join(absDir, FILES.caCert), certs.caCert, 0o644);
    await writeAtomically(path.join(absDir, FILES.key), certs.key, 0o600);
    await writeAtomically(path.join(absDir, FILES.cert), certs.cert, 0o644);
    if (certs.clientCert !== undefined && certs.clientKey !== undefined) {
      await writeAtomically(path.join(absDir, FILES.clientKey), certs.clientKey, 0o600);
      await writeAtomically(path.join(absDir, FILES.clientCert), certs.clientCert, 0o644);
    } else {
      // A client certificate from the previous CA would no longer verify: don't leave it lying around.
      await removeIfPresent(path.join(absDir, FILES.clientCert));
      await removeIfPresent(path.join(absDir, FILES.clientKey));
    }
    return { ...certs, dir: absDir, created: true };
  } finally {
    await release();
  }
}

function resolveOptions(options: DevCertificateOptions): ResolvedOptions {
  const hosts = options.hosts ?? DEFAULT_HOSTS;
  if (!Array.isArray(hosts) || hosts.length === 0) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'hosts must be a non-empty array of host names or IP addresses');
  }
  for (const host of hosts) {
    if (typeof host !== 'string' || (isIP(host) === 0 && !isDnsName(host))) {
      throw netchanError(ErrorCodes.INVALID_ARGUMENT, `not an IP address or DNS name: ${JSON.stringify(host)}`);
    }
  }
  const { clientName } = options;
  if (clientName !== undefined && (typeof clientName !== 'string' || clientName.trim() === '')) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'clientName must be a non-empty string');
  }
  const validDays = options.validDays ?? DEFAULT_VALID_DAYS;
  if (typeof validDays !== 'number' || !Number.isFinite(validDays) || validDays <= 0) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, `validDays must be a positive number, got ${String(validDays)}`);
  }
  return { hosts: [...new Set(hosts)], clientName, validDays };
}

/** Letters, digits, '-', '_' labels separated by dots; a leading '*.' wildcard is allowed. */
function isDnsName(name: string): boolean {
  return name.length <= 253 && /^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/.test(name);
}

async function generate(options: ResolvedOptions): Promise<DevCertificates> {
  const x509 = await loadX509();
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const notAfter = new Date(Date.now() + options.validDays * DAY_MS);

  const caKeys = await newKeyPair();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: [{ CN: [CA_NAME] }],
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      // pathLength 0: this CA signs leaf certificates only, never another CA.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });

  const leaf = async (
    commonName: string,
    usage: X509.ExtendedKeyUsage,
    extra: X509.Extension[],
  ): Promise<{ cert: string; key: string }> => {
    const keys = await newKeyPair();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: [{ CN: [commonName] }],
      issuer: ca.subjectName,
      notBefore,
      notAfter,
      publicKey: keys.publicKey,
      signingKey: caKeys.privateKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([usage]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(caKeys.publicKey),
        ...extra,
      ],
    });
    return { cert: toPem(cert.rawData), key: exportKey(keys.privateKey) };
  };

  const san = new x509.SubjectAlternativeNameExtension(
    options.hosts.map((host) => ({ type: isIP(host) === 0 ? ('dns' as const) : ('ip' as const), value: host })),
  );
  const server = await leaf(options.hosts[0] as string, x509.ExtendedKeyUsage.serverAuth, [san]);
  const client =
    options.clientName === undefined ? undefined : await leaf(options.clientName, x509.ExtendedKeyUsage.clientAuth, []);

  return {
    caCert: toPem(ca.rawData),
    caKey: exportKey(caKeys.privateKey),
    cert: server.cert,
    key: server.key,
    ...(client && { clientCert: client.cert, clientKey: client.key }),
    fingerprint: certificateFingerprint(server.cert),
  };
}

async function newKeyPair(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
}

/** 16 random bytes as hex, made a positive DER INTEGER of exactly 16 bytes. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  // Top bit clear: DER integers are signed, and a set bit would need a 17th (zero) byte to stay
  // positive. Low bit set: a zero first byte would be dropped, leaving 15 bytes.
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

/** PEM as Node writes it ('\n' line ends, 64 columns), whatever the library's own formatting. */
function toPem(der: ArrayBuffer): string {
  return new X509Certificate(Buffer.from(der)).toString();
}

function exportKey(key: CryptoKey): string {
  return KeyObject.from(key as unknown as webcrypto.CryptoKey).export({ type: 'pkcs8', format: 'pem' }) as string;
}

function parseCertificate(pem: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw netchanError(ErrorCodes.INVALID_ARGUMENT, 'not a PEM X.509 certificate', { cause: err });
  }
}

/** Reads the set in `dir`; `undefined` when any part is missing, broken, mismatched or stale. */
async function load(dir: string, options: ResolvedOptions): Promise<DevCertificates | undefined> {
  const withClient = options.clientName !== undefined;
  const read = (name: string) => readFile(path.join(dir, name), 'utf8');
  let files: string[];
  try {
    files = await Promise.all([
      read(FILES.caCert),
      read(FILES.caKey),
      read(FILES.cert),
      read(FILES.key),
      ...(withClient ? [read(FILES.clientCert), read(FILES.clientKey)] : []),
    ]);
  } catch {
    // Missing or unreadable: regenerating is the answer either way (writing reports real I/O errors).
    return undefined;
  }
  const [caCert, caKey, cert, key, clientCert, clientKey] = files as [string, string, string, string, string?, string?];
  try {
    const ca = new X509Certificate(caCert);
    const server = new X509Certificate(cert);
    const now = Date.now();
    // A pair whose halves come from two generations (another process replaced the files between
    // our reads) fails these checks and is treated like a missing set.
    const issuedBy = (c: X509Certificate, keyPem: string) =>
      c.checkPrivateKey(createPrivateKey(keyPem)) &&
      c.checkIssued(ca) &&
      c.verify(ca.publicKey) &&
      Date.parse(c.validTo) - now > RENEW_BEFORE_MS &&
      Date.parse(c.validFrom) <= now;
    if (!ca.ca || !ca.checkPrivateKey(createPrivateKey(caKey)) || Date.parse(ca.validTo) - now <= RENEW_BEFORE_MS) {
      return undefined;
    }
    if (!issuedBy(server, key) || !options.hosts.every((host) => coversHost(server, host))) return undefined;
    if (withClient) {
      const client = new X509Certificate(clientCert as string);
      if (!issuedBy(client, clientKey as string)) return undefined;
      // Node renders the subject with escaping; the parsed name compares without ambiguity.
      const x509 = await loadX509();
      const cn = new x509.X509Certificate(client.raw).subjectName.getField('CN');
      if (cn.length !== 1 || cn[0] !== options.clientName) return undefined;
      return { caCert, caKey, cert, key, clientCert: clientCert as string, clientKey: clientKey as string, fingerprint: server.fingerprint256 };
    }
    return { caCert, caKey, cert, key, fingerprint: server.fingerprint256 };
  } catch {
    // Corrupt PEM or key: replace the set.
    return undefined;
  }
}

function coversHost(cert: X509Certificate, host: string): boolean {
  if (isIP(host) !== 0) return cert.checkIP(host) !== undefined;
  // Compared against the DNS SANs literally (not checkHost) so a requested '*.test' wildcard
  // matches a '*.test' SAN rather than being treated as a name to match.
  const dnsNames = (cert.subjectAltName ?? '')
    .split(', ')
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => entry.slice(4).toLowerCase());
  return dnsNames.includes(host.toLowerCase().replace(/\.$/, ''));
}

/**
 * Serializes generation across processes with an exclusively created lock file. Returns the
 * function that releases it.
 */
async function acquireLock(dir: string): Promise<() => Promise<void>> {
  const lockPath = path.join(dir, '.lock');
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      const handle = await open(lockPath, 'wx', 0o600);
      await handle.close();
      return () => removeIfPresent(lockPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const held = await stat(lockPath).catch(() => undefined);
    if (held && Date.now() - held.mtimeMs > LOCK_STALE_MS) {
      // Left by a crashed process. Two waiters may both break it; the worst case is one
      // redundant generation, which the consistency checks in load() tolerate.
      await removeIfPresent(lockPath);
      continue;
    }
    if (Date.now() > deadline) {
      throw netchanError(ErrorCodes.TIMEOUT, `timed out waiting for the certificate lock ${lockPath}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10 + Math.random() * 20));
  }
}

/** Writes a sibling temp file and renames it over `file`, so readers see the old or the new file, whole. */
async function writeAtomically(file: string, data: string, mode: number): Promise<void> {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(temp, data, { mode, flag: 'wx' });
    await rename(temp, file);
  } catch (err) {
    await removeIfPresent(temp);
    throw err;
  }
}

async function removeIfPresent(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/**
 * The development CA certificate in `dir` (PEM), or `undefined` when there is none: what a
 * client on the same machine trusts to reach a server using that directory's certificate.
 */
export async function loadDevCa(dir: string): Promise<string | undefined> {
  try {
    return await readFile(path.join(path.resolve(dir), FILES.caCert), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
