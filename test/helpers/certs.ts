/**
 * The certificates every TLS test uses: one development CA, server and client certificate,
 * kept in certs/test/ so repeated runs (and concurrent test processes) share them instead of
 * generating a set per test.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureDevCertificates, type DevCertificates } from '../../lib/transport/devcert.js';

/** The repository root: this file is test/helpers/certs.ts. */
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

let cached: Promise<DevCertificates> | undefined;

/**
 * The test certificates: server certificate for localhost, 127.0.0.1 and ::1, and a client
 * certificate `CN=test-client` for mTLS, all signed by the same CA. Loaded (or made) once per process.
 */
export function testCertificates(): Promise<DevCertificates> {
  cached ??= ensureDevCertificates(path.join(repoRoot, 'certs', 'test'), { clientName: 'test-client' }).catch(
    (err: unknown) => {
      // Don't memoize a failure: a later test may succeed once the cause is gone.
      cached = undefined;
      throw err;
    },
  );
  return cached;
}
