import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { expect } from 'chai';
import {
  certificateFingerprint,
  ensureDevCertificates,
  generateCertificates,
  type DevCertificates,
} from '../lib/transport/devcert.js';
import { ErrorCodes, isNetchanError } from '../lib/core/errors.js';

/** What one TLS client connection saw, from connect to close. */
interface Outcome {
  authorized: boolean;
  data: string;
  error: (Error & { code?: string }) | undefined;
}

/** A TLS 1.3 server on 127.0.0.1 that greets each verified connection and records what happened. */
interface TestServer {
  port: number;
  /** `authorized` of every connection that completed its handshake on the server side. */
  accepted: { authorized: boolean; peerCN: string | undefined }[];
  /** Errors of handshakes the server refused. */
  refused: (Error & { code?: string })[];
  close(): Promise<void>;
}

const servers: TestServer[] = [];

async function startServer(options: tls.TlsOptions): Promise<TestServer> {
  const sockets = new Set<tls.TLSSocket>();
  const accepted: TestServer['accepted'] = [];
  const refused: TestServer['refused'] = [];
  const server = tls.createServer({ minVersion: 'TLSv1.3', ...options }, (socket) => {
    const peer = socket.getPeerCertificate();
    accepted.push({ authorized: socket.authorized, peerCN: peer?.subject?.CN as string | undefined });
    socket.end('hello');
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {}); // the client may reset; the test looks at the client's side
  });
  server.on('tlsClientError', (err) => refused.push(err));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const started: TestServer = {
    port: (server.address() as AddressInfo).port,
    accepted,
    refused,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  servers.push(started);
  return started;
}

/** Connects, reads until the connection closes (or 3 s pass), and reports what happened. */
function exchange(options: tls.ConnectionOptions): Promise<Outcome> {
  return new Promise((resolve) => {
    const outcome: Outcome = { authorized: false, data: '', error: undefined };
    const socket = tls.connect({ host: '127.0.0.1', ...options });
    socket.setTimeout(3000, () => socket.destroy(new Error('test connection timed out')));
    socket.on('secureConnect', () => {
      outcome.authorized = socket.authorized;
    });
    socket.on('data', (chunk: Buffer) => {
      outcome.data += chunk.toString();
    });
    socket.on('error', (err) => {
      outcome.error ??= err;
    });
    socket.on('close', () => resolve(outcome));
  });
}

/** Waits (briefly) for the server side to record what the client side has already seen end. */
async function until(predicate: () => boolean, timeoutMs = 1000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('devcert', function () {
  let certs: DevCertificates;
  let otherCerts: DevCertificates;
  const tempDirs: string[] = [];

  before(async function () {
    [certs, otherCerts] = await Promise.all([
      generateCertificates({ clientName: 'mtls-client' }),
      generateCertificates({ clientName: 'stranger' }),
    ]);
  });

  afterEach(async function () {
    while (servers.length) await (servers.pop() as TestServer).close();
  });

  after(async function () {
    for (const dir of tempDirs) await rm(dir, { recursive: true, force: true });
  });

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'netchan-devcert-'));
    tempDirs.push(dir);
    return dir;
  }

  describe('generateCertificates', function () {
    it('makes a P-256 CA and a server certificate with the requested properties', function () {
      const ca = new X509Certificate(certs.caCert);
      const server = new X509Certificate(certs.cert);
      expect(ca.ca).to.equal(true);
      expect(ca.subject).to.equal('CN=netchan development CA');
      expect(ca.publicKey.asymmetricKeyDetails?.namedCurve).to.equal('prime256v1');
      expect(server.ca).to.equal(false);
      expect(server.checkIssued(ca)).to.equal(true);
      expect(server.verify(ca.publicKey)).to.equal(true);
      expect(server.subjectAltName).to.equal('DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
      expect(server.keyUsage).to.deep.equal(['1.3.6.1.5.5.7.3.1']); // Node's keyUsage lists the EKU OIDs
      expect(server.publicKey.asymmetricKeyDetails?.namedCurve).to.equal('prime256v1');

      const now = Date.now();
      const hour = 3600_000;
      expect(Date.parse(server.validFrom)).to.be.within(now - hour - 60_000, now - hour + 60_000);
      expect(Date.parse(server.validTo)).to.be.within(now + 825 * 24 * hour - 60_000, now + 825 * 24 * hour + 60_000);

      for (const cert of [ca, server, new X509Certificate(certs.clientCert as string)]) {
        expect(cert.serialNumber).to.match(/^[0-7][0-9A-F]{31}$/); // 16 bytes, positive
        expect(cert.serialNumber).to.not.match(/^00/);
      }
      expect(new Set([ca.serialNumber, server.serialNumber]).size).to.equal(2);

      for (const key of [certs.caKey, certs.key, certs.clientKey as string]) {
        expect(key.startsWith('-----BEGIN PRIVATE KEY-----\n')).to.equal(true);
      }
      expect(server.checkPrivateKey(createPrivateKey(certs.key))).to.equal(true);
      expect(ca.checkPrivateKey(createPrivateKey(certs.caKey))).to.equal(true);
    });

    it('makes a client certificate for clientAuth only when asked', async function () {
      const client = new X509Certificate(certs.clientCert as string);
      expect(client.subject).to.equal('CN=mtls-client');
      expect(client.keyUsage).to.deep.equal(['1.3.6.1.5.5.7.3.2']);
      expect(client.checkIssued(new X509Certificate(certs.caCert))).to.equal(true);
      expect(client.checkPrivateKey(createPrivateKey(certs.clientKey as string))).to.equal(true);

      const serverOnly = await generateCertificates({ hosts: ['example.test', '10.1.2.3'], validDays: 2 });
      expect(serverOnly.clientCert).to.equal(undefined);
      expect(serverOnly.clientKey).to.equal(undefined);
      const server = new X509Certificate(serverOnly.cert);
      expect(server.subjectAltName).to.equal('DNS:example.test, IP Address:10.1.2.3');
      expect(server.subject).to.equal('CN=example.test');
    });

    it('fingerprint is the SHA-256 fingerprint of the server certificate', function () {
      const expected = new X509Certificate(certs.cert).fingerprint256;
      expect(certs.fingerprint).to.equal(expected);
      expect(certificateFingerprint(certs.cert)).to.equal(expected);
      expect(expected).to.match(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    });

    it('rejects bad options with ERR_INVALID_ARGUMENT', async function () {
      for (const options of [{ hosts: [] }, { hosts: [''] }, { hosts: ['bad host'] }, { clientName: '' }, { validDays: 0 }]) {
        const err = await generateCertificates(options).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(isNetchanError(err, ErrorCodes.INVALID_ARGUMENT), `${JSON.stringify(options)}: ${String(err)}`).to.equal(true);
      }
      expect(() => certificateFingerprint('not a certificate')).to.throw().that.satisfies((e: unknown) =>
        isNetchanError(e, ErrorCodes.INVALID_ARGUMENT),
      );
    });
  });

  describe('with real TLS 1.3', function () {
    it('a client trusting the CA verifies the server by name', async function () {
      const server = await startServer({ key: certs.key, cert: certs.cert });
      const outcome = await exchange({ port: server.port, ca: certs.caCert, servername: 'localhost' });
      expect(outcome.error).to.equal(undefined);
      expect(outcome.authorized).to.equal(true);
      expect(outcome.data).to.equal('hello');
    });

    it('a client trusting the CA verifies the server by IP address (IP SAN)', async function () {
      const server = await startServer({ key: certs.key, cert: certs.cert });
      const outcome = await exchange({ port: server.port, ca: certs.caCert });
      expect(outcome.error).to.equal(undefined);
      expect(outcome.authorized).to.equal(true);
      expect(outcome.data).to.equal('hello');
    });

    it('a client trusting a different CA refuses the server', async function () {
      const server = await startServer({ key: certs.key, cert: certs.cert });
      const outcome = await exchange({ port: server.port, ca: otherCerts.caCert, servername: 'localhost' });
      expect(outcome.authorized).to.equal(false);
      expect(outcome.data).to.equal('');
      expect(outcome.error?.code).to.be.oneOf(['UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']);
    });

    it('a name the certificate does not cover is refused', async function () {
      const server = await startServer({ key: certs.key, cert: certs.cert });
      const outcome = await exchange({ port: server.port, ca: certs.caCert, servername: 'elsewhere.test' });
      expect(outcome.error?.code).to.equal('ERR_TLS_CERT_ALTNAME_INVALID');
    });

    describe('mTLS', function () {
      const mtlsOptions = (): tls.TlsOptions => ({
        key: certs.key,
        cert: certs.cert,
        ca: certs.caCert,
        requestCert: true,
        rejectUnauthorized: true,
      });

      it('the server accepts the generated client certificate', async function () {
        const server = await startServer(mtlsOptions());
        const outcome = await exchange({
          port: server.port,
          ca: certs.caCert,
          servername: 'localhost',
          cert: certs.clientCert as string,
          key: certs.clientKey as string,
        });
        expect(outcome.error).to.equal(undefined);
        expect(outcome.data).to.equal('hello');
        expect(server.accepted).to.deep.equal([{ authorized: true, peerCN: 'mtls-client' }]);
      });

      it('the server refuses a client without a certificate', async function () {
        const server = await startServer(mtlsOptions());
        const outcome = await exchange({ port: server.port, ca: certs.caCert, servername: 'localhost' });
        // In TLS 1.3 the client's handshake completes before the server checks its certificate:
        // the refusal arrives as an alert after that, so look at both ends.
        expect(outcome.data).to.equal('');
        expect(outcome.error?.code).to.equal('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED');
        await until(() => server.refused.length > 0);
        expect(server.accepted).to.deep.equal([]);
        expect(server.refused.map((e) => e.code)).to.deep.equal(['ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE']);
      });

      it('the server refuses a client certificate from another CA', async function () {
        const server = await startServer(mtlsOptions());
        const outcome = await exchange({
          port: server.port,
          ca: certs.caCert,
          servername: 'localhost',
          cert: otherCerts.clientCert as string,
          key: otherCerts.clientKey as string,
        });
        // Node's server checks the chain after OpenSSL's handshake and just drops the socket
        // (no alert), so the client sees a clean end without data; the server side tells.
        expect(outcome.data).to.equal('');
        await until(() => server.refused.length > 0);
        expect(server.accepted).to.deep.equal([]);
        expect(server.refused).to.have.length(1);
      });
    });
  });

  describe('ensureDevCertificates', function () {
    it('writes a private directory and key files, then loads the same set', async function () {
      const dir = path.join(await tempDir(), 'certs');
      const first = await ensureDevCertificates(dir, { clientName: 'c' });
      expect(first.created).to.equal(true);
      expect(first.dir).to.equal(dir);
      expect((await stat(dir)).mode & 0o777).to.equal(0o700);
      for (const name of ['ca-key.pem', 'server-key.pem', 'client-key.pem']) {
        expect((await stat(path.join(dir, name))).mode & 0o777, name).to.equal(0o600);
      }
      expect(await readFile(path.join(dir, 'server.pem'), 'utf8')).to.equal(first.cert);
      expect(await readFile(path.join(dir, 'client-key.pem'), 'utf8')).to.equal(first.clientKey);

      const second = await ensureDevCertificates(dir, { clientName: 'c' });
      expect(second.created).to.equal(false);
      expect(second.fingerprint).to.equal(first.fingerprint);
      expect(second).to.deep.equal({ ...first, created: false });

      // Without clientName the server part is still good: loaded, not regenerated.
      const third = await ensureDevCertificates(dir);
      expect(third.created).to.equal(false);
      expect(third.fingerprint).to.equal(first.fingerprint);
      expect(third.clientCert).to.equal(undefined);
    });

    it('regenerates a corrupted server.pem', async function () {
      const dir = await tempDir();
      const first = await ensureDevCertificates(dir);
      await writeFile(path.join(dir, 'server.pem'), '-----BEGIN CERTIFICATE-----\nnot base64\n');
      const second = await ensureDevCertificates(dir);
      expect(second.created).to.equal(true);
      expect(second.fingerprint).to.not.equal(first.fingerprint);
      expect(certificateFingerprint(await readFile(path.join(dir, 'server.pem'), 'utf8'))).to.equal(second.fingerprint);
    });

    it('regenerates when a file is missing, the set is mismatched, or the client name changes', async function () {
      const dir = await tempDir();
      let last = await ensureDevCertificates(dir, { clientName: 'a' });

      await rm(path.join(dir, 'server-key.pem'));
      let next = await ensureDevCertificates(dir, { clientName: 'a' });
      expect(next.created, 'missing key').to.equal(true);
      last = next;

      // A server certificate from another CA: parses fine, but does not belong.
      await writeFile(path.join(dir, 'server.pem'), otherCerts.cert);
      await writeFile(path.join(dir, 'server-key.pem'), otherCerts.key);
      next = await ensureDevCertificates(dir, { clientName: 'a' });
      expect(next.created, 'foreign server certificate').to.equal(true);
      expect(next.caCert).to.not.equal(last.caCert);

      next = await ensureDevCertificates(dir, { clientName: 'b' });
      expect(next.created, 'other client name').to.equal(true);
      expect(new X509Certificate(next.clientCert as string).subject).to.equal('CN=b');
    });

    it('regenerates certificates expiring within 7 days and ones not covering the hosts', async function () {
      const dir = await tempDir();
      expect((await ensureDevCertificates(dir, { validDays: 6 })).created).to.equal(true);
      expect((await ensureDevCertificates(dir, { validDays: 6 })).created, 'expiring').to.equal(true);
      expect((await ensureDevCertificates(dir)).created).to.equal(true);
      expect((await ensureDevCertificates(dir)).created).to.equal(false);
      const other = await ensureDevCertificates(dir, { hosts: ['example.test'] });
      expect(other.created, 'new host').to.equal(true);
      expect(new X509Certificate(other.cert).subjectAltName).to.equal('DNS:example.test');
    });

    it('concurrent callers end up with one consistent set', async function () {
      const dir = path.join(await tempDir(), 'shared');
      const results = await Promise.all(
        Array.from({ length: 4 }, () => ensureDevCertificates(dir, { clientName: 'c' })),
      );
      expect(results.filter((r) => r.created)).to.have.length(1);
      expect(new Set(results.map((r) => r.fingerprint)).size).to.equal(1);
      const loaded = await ensureDevCertificates(dir, { clientName: 'c' });
      expect(loaded.created).to.equal(false);
      expect(loaded.fingerprint).to.equal(results[0]?.fingerprint);
    });

    it('rejects bad options before touching the directory', async function () {
      const dir = path.join(await tempDir(), 'never');
      const err = await ensureDevCertificates(dir, { hosts: [] }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isNetchanError(err, ErrorCodes.INVALID_ARGUMENT)).to.equal(true);
      const exists = await stat(dir).then(
        () => true,
        () => false,
      );
      expect(exists).to.equal(false);
    });
  });
});
