/**
 * Makes (or reuses) development certificates for netchan:
 *
 *   tsx bin/certs.ts [--dir DIR] [--host NAME ...] [--client NAME]
 *
 * Defaults: directory `certs/`, hosts localhost, 127.0.0.1 and ::1. Prints the file paths and the
 * server certificate's SHA-256 fingerprint; exits 1 with a one-line error on failure.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureDevCertificates, type DevCertificateOptions } from '../lib/transport/devcert.js';

const USAGE = 'usage: tsx bin/certs.ts [--dir DIR] [--host NAME ...] [--client NAME]';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      dir: { type: 'string', default: 'certs' },
      host: { type: 'string', multiple: true },
      client: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const options: DevCertificateOptions = {};
  if (values.host !== undefined) options.hosts = values.host;
  if (values.client !== undefined) options.clientName = values.client;

  const certs = await ensureDevCertificates(values.dir, options);
  // Relative paths read better for the usual certs/ under the project; absolute ones elsewhere.
  const shown = (file: string) => {
    const relative = path.relative(process.cwd(), file);
    return relative === '' ? '.' : relative.startsWith('..') || path.isAbsolute(relative) ? file : relative;
  };
  const rel = (name: string) => shown(path.join(certs.dir, name));
  const lines = [
    `${certs.created ? 'created' : 'reused'} development certificates in ${shown(certs.dir)}`,
    `  CA certificate:     ${rel('ca.pem')}   (clients trust this: ca option)`,
    `  CA key:             ${rel('ca-key.pem')}`,
    `  server certificate: ${rel('server.pem')}`,
    `  server key:         ${rel('server-key.pem')}`,
  ];
  if (certs.clientCert !== undefined) {
    lines.push(`  client certificate: ${rel('client.pem')}`, `  client key:         ${rel('client-key.pem')}`);
  }
  lines.push(`  SHA-256 fingerprint: ${certs.fingerprint}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`certs: ${message.split('\n')[0]}\n`);
  process.exitCode = 1;
});
