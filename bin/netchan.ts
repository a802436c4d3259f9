/**
 * The `netchan` command line: a TCP gateway and its client (`gateway`, `forward`), channels from
 * the shell as JSON lines (`listen`, `send`, `recv`), development certificates (`certs`) and the
 * cluster echo benchmark (`bench`). `netchan <command> --help` describes each one.
 *
 * Exit codes (docs/gateway.md): 0 done (also a long-running command stopped by SIGINT or
 * SIGTERM), 1 failure, 2 usage error, 3 cannot connect (network, TLS, session lost), 4 refused by
 * the server (authentication, policy, limit, unknown channel), 130 `send`/`recv` interrupted.
 * Errors are one line on stderr: `netchan <command>: <CODE>: <message>`.
 */
import { spawn } from 'node:child_process';
import { subscribe } from 'node:diagnostics_channel';
import { createHash, timingSafeEqual } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadDevCa, ensureDevCertificates } from '../lib/transport/devcert.js';
import { parseAddress } from '../lib/cluster/cluster.js';
import {
  ErrorCodes,
  GATEWAY_AUDIT_CHANNEL,
  NetchanError,
  connect,
  createGateway,
  createServer,
  devCertificateDir,
  dial,
  listen,
  type ChannelLike,
  type ConnectOptions,
  type GatewayRule,
  type Session,
  type TransportChoice,
} from '../lib/index.js';

/** Exit codes scripts can rely on. */
export const Exit = { OK: 0, FAILURE: 1, USAGE: 2, CONNECT: 3, REFUSED: 4, INTERRUPTED: 130 } as const;

class UsageError extends Error {}

type OptionSpec = Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string; default?: string | boolean }>;
type Values = Record<string, string | boolean | string[] | boolean[] | undefined>;

interface Command {
  summary: string;
  usage: string;
  options: OptionSpec;
  run(values: Values, positionals: string[]): Promise<number>;
}

const help = { type: 'boolean', short: 'h' } as const;
const clientOptions = {
  ca: { type: 'string' },
  pin: { type: 'string' },
  token: { type: 'string' },
  'token-file': { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  transport: { type: 'string' },
  insecure: { type: 'boolean' },
} as const;
const CLIENT_USAGE = `
connection:
  --ca FILE           CA certificate to trust (PEM); default: the development CA of this machine
  --pin SHA256        trust the server certificate with this SHA-256 fingerprint instead
  --token T           bearer token (or --token-file FILE, or NETCHAN_TOKEN in the environment)
  --cert F --key F    client certificate and key (mTLS)
  --transport T       auto (default), h2 or ws (the WebSocket fallback)
  --insecure          allow an http:// URL (plaintext: loopback or behind a TLS-terminating proxy)`;

const commands: Record<string, Command> = {
  gateway: {
    summary: 'run a TCP gateway: authenticated clients reach the targets --allow permits',
    usage: `usage: netchan gateway --allow [PRINCIPAL=]HOST:PORT [--allow ...] (--token T | --token-file F | --request-cert --ca F) [options]

Serves netchan on --listen and lets authenticated clients open TCP connections to the targets the
--allow rules permit, and to nothing else. HOST is a name (*.example.com for names under it), an IP,
a CIDR range (10.0.0.0/8, [fd00::/8]) or *; PORT a number, a range 5000-5999, or *. A name never
leads to a loopback, link-local or cloud-metadata address: allow such an address by the address.
PRINCIPAL= limits a rule to one principal (token, or cert:<CN> with mTLS).
Prints one JSON line per connection (the audit event) on stdout; --quiet for none.

options:
  --listen HOST:PORT            where to listen (default 127.0.0.1:8443)
  --cert FILE --key FILE        server certificate and key (PEM); default: the development
                                certificate of this machine (see netchan certs)
  --token T                     accept this bearer token (repeatable); principal "token"
  --token-file FILE             accept the token(s) in FILE, one a line
  --ca FILE --request-cert      require a client certificate signed by this CA (mTLS);
                                principal cert:<CN>
  --path PATH                   endpoint path (default /)
  --max-connections-per-session N    (default 256)
  --max-connections-per-principal N  (default 1024)
  --connect-timeout-ms MS       (default 10000)
  --idle-timeout-ms MS          reset connections idle this long, 0 never (default 3600000)
  --insecure                    plaintext (h2c and ws), only behind a TLS-terminating proxy
  --quiet                       no audit lines on stdout`,
    options: {
      listen: { type: 'string', default: '127.0.0.1:8443' },
      cert: { type: 'string' },
      key: { type: 'string' },
      ca: { type: 'string' },
      'request-cert': { type: 'boolean' },
      allow: { type: 'string', multiple: true },
      token: { type: 'string', multiple: true },
      'token-file': { type: 'string' },
      path: { type: 'string', default: '/' },
      'max-connections-per-session': { type: 'string' },
      'max-connections-per-principal': { type: 'string' },
      'connect-timeout-ms': { type: 'string' },
      'idle-timeout-ms': { type: 'string' },
      insecure: { type: 'boolean' },
      quiet: { type: 'boolean' },
      help,
    },
    run: runGateway,
  },
  forward: {
    summary: 'listen locally and forward each connection to a target through a gateway',
    usage: `usage: netchan forward --via URL --target HOST:PORT [--local HOST:PORT] [connection options]

Listens on --local and forwards every connection to --target through the gateway at --via
(like ssh -L). The target is resolved and checked by the gateway. Prints the bound address on
stderr, and one line per connection the gateway refuses.

options:
  --via URL           the gateway, e.g. https://gw.example.com:8443/
  --target HOST:PORT  where the gateway connects
  --local HOST:PORT   where to listen (default 127.0.0.1:0: a free port, printed)${CLIENT_USAGE}`,
    options: { via: { type: 'string' }, target: { type: 'string' }, local: { type: 'string', default: '127.0.0.1:0' }, ...clientOptions, help },
    run: runForward,
  },
  listen: {
    summary: 'serve the two cluster channels; JSON lines on stdin go out, values in come to stdout',
    usage: `usage: netchan listen [HOST:PORT] [--cert F --key F] [--token T] [--capacity N]

Starts a server (default 127.0.0.1:9876) exporting the cluster channels (PROTOCOL §4.4): each JSON
line read on stdin is sent to one client ready to take it (netchan recv), and every value clients
send (netchan send) is written to stdout as a JSON line. End of stdin closes the outgoing channel.
Without --cert/--key it uses the development certificate of this machine.

options:
  --cert FILE --key FILE   server certificate and key (PEM)
  --token T                require this bearer token (or --token-file FILE, or NETCHAN_TOKEN)
  --capacity N             capacity of the two channels (default 128)
  --insecure               plaintext`,
    options: {
      cert: { type: 'string' },
      key: { type: 'string' },
      token: { type: 'string' },
      'token-file': { type: 'string' },
      capacity: { type: 'string' },
      insecure: { type: 'boolean' },
      help,
    },
    run: runListen,
  },
  send: {
    summary: 'send each JSON line of stdin on a channel',
    usage: `usage: netchan send ADDRESS [--channel NAME] [--close] [connection options]

Sends each line of stdin (JSON; empty lines skipped) to the server at ADDRESS (HOST:PORT or a
URL): to its channel NAME, or without --channel to the cluster channel netchan listen prints.
Exits once stdin ended and every value was sent (capacity 0: taken by a receiver).

options:
  --channel NAME   the exported channel to send on
  --close          close the channel after the last value${CLIENT_USAGE}`,
    options: { channel: { type: 'string' }, close: { type: 'boolean' }, ...clientOptions, help },
    run: runSend,
  },
  recv: {
    summary: 'print the values received from a channel as JSON lines',
    usage: `usage: netchan recv ADDRESS [--channel NAME] [--count N] [connection options]

Receives from the server at ADDRESS (HOST:PORT or a URL): from its channel NAME, or without
--channel from the cluster channel netchan listen feeds; prints each value as a JSON line.
Ends when the channel is closed and drained, or after --count values.

options:
  --channel NAME   the exported channel to receive from
  --count N        stop after N values${CLIENT_USAGE}`,
    options: { channel: { type: 'string' }, count: { type: 'string' }, ...clientOptions, help },
    run: runRecv,
  },
  certs: {
    summary: 'create (or show) the development CA and server certificate',
    usage: `usage: netchan certs [--dir DIR] [--host NAME ...] [--client NAME]

Creates, once, a development CA and a server certificate (for localhost, 127.0.0.1 and ::1 unless
--host is given) in DIR, and prints the paths and the SHA-256 fingerprint. Default DIR: the
per-user directory that listen/dial and this command line use (${devCertificateDir()}).

options:
  --dir DIR        where the certificates live
  --host NAME      a name or IP the server certificate is for (repeatable)
  --client NAME    also make a client certificate with this CN (mTLS)`,
    options: { dir: { type: 'string' }, host: { type: 'string', multiple: true }, client: { type: 'string' }, help },
    run: runCerts,
  },
  bench: {
    summary: 'the cluster echo benchmark: live progress, then a table',
    usage: `usage: netchan bench [--clients N] [--seconds S] [--capacity C]

Runs the cluster echo on loopback (examples/cluster.ts, the same as npm run demo): one server,
N clients (default 50) echoing every task, a live progress line and a final table. Needs a
checkout of the repository.`,
    options: { clients: { type: 'string' }, seconds: { type: 'string' }, capacity: { type: 'string' }, help },
    run: runBench,
  },
};

const USAGE = `usage: netchan <command> [options]      (netchan <command> --help for its options)

commands:
${Object.entries(commands)
  .map(([name, c]) => `  ${name.padEnd(9)} ${c.summary}`)
  .join('\n')}

exit codes: 0 done, 1 failure, 2 usage error, 3 cannot connect, 4 refused by the server,
130 send/recv interrupted`;

// ---------------------------------------------------------------------------------------------
// helpers

function str(values: Values, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

function list(values: Values, name: string): string[] {
  const v = values[name];
  return Array.isArray(v) ? (v as string[]) : typeof v === 'string' ? [v] : [];
}

function required(values: Values, name: string): string {
  const v = str(values, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

function integer(values: Values, name: string, min = 0): number | undefined {
  const v = str(values, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
  return n;
}

function readFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Tokens from --token (repeatable), --token-file (one a line) and NETCHAN_TOKEN. */
function tokensOf(values: Values): string[] {
  const tokens = [...list(values, 'token')];
  const file = str(values, 'token-file');
  if (file !== undefined) tokens.push(...readFile(file, 'token file').split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== ''));
  if (tokens.length === 0 && process.env.NETCHAN_TOKEN) tokens.push(process.env.NETCHAN_TOKEN);
  return tokens;
}

/** A constant-time check of a bearer token against the accepted ones. */
function tokenChecker(tokens: string[]): (authorization: unknown) => boolean {
  const digests = tokens.map((t) => createHash('sha256').update(t).digest());
  return (authorization) => {
    if (typeof authorization !== 'string' || !authorization.startsWith('Bearer ')) return false;
    const given = createHash('sha256').update(authorization.slice(7)).digest();
    let ok = false;
    for (const d of digests) ok = timingSafeEqual(d, given) || ok;
    return ok;
  };
}

/** Connection options shared by forward, send and recv. */
async function clientOptionsOf(values: Values, url: URL): Promise<ConnectOptions> {
  const options: ConnectOptions = {};
  const ca = str(values, 'ca');
  if (ca !== undefined) options.ca = readFile(ca, 'CA file');
  const pin = str(values, 'pin');
  if (pin !== undefined) options.pin = pin;
  const cert = str(values, 'cert');
  const key = str(values, 'key');
  if ((cert === undefined) !== (key === undefined)) throw new UsageError('--cert and --key go together');
  if (cert !== undefined) options.cert = readFile(cert, 'certificate');
  if (key !== undefined) options.key = readFile(key, 'key');
  const tokens = tokensOf(values);
  if (tokens.length > 1) throw new UsageError('give one token');
  if (tokens[0] !== undefined) options.token = tokens[0];
  const transport = str(values, 'transport');
  if (transport !== undefined) {
    if (transport !== 'auto' && transport !== 'h2' && transport !== 'ws') throw new UsageError(`--transport must be auto, h2 or ws, got ${JSON.stringify(transport)}`);
    options.transport = transport as TransportChoice;
  }
  if (values.insecure === true) options.insecure = true;
  // zero-config on one machine: trust the development CA when nothing else was said
  if (url.protocol === 'https:' && options.ca === undefined && options.pin === undefined) {
    const dev = await loadDevCa(devCertificateDir());
    if (dev !== undefined) options.ca = dev;
  }
  return options;
}

function urlOf(address: string, insecure: boolean): URL {
  try {
    return parseAddress(address, !insecure);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return Exit.USAGE;
  if (!(err instanceof NetchanError)) return Exit.FAILURE;
  switch (err.code) {
    case ErrorCodes.INVALID_ARGUMENT:
      return Exit.USAGE;
    case ErrorCodes.UNAUTHORIZED:
    case ErrorCodes.FORBIDDEN_TARGET:
    case ErrorCodes.LIMIT:
    case ErrorCodes.UNKNOWN_CHANNEL:
    case ErrorCodes.TARGET_REFUSED:
    case ErrorCodes.TARGET_UNREACHABLE:
    case ErrorCodes.TARGET_TIMEOUT:
      return Exit.REFUSED;
    case ErrorCodes.CONNECT:
    case ErrorCodes.TLS:
    case ErrorCodes.PIN_MISMATCH:
    case ErrorCodes.CONNECTION_LOST:
    case ErrorCodes.TIMEOUT:
    case ErrorCodes.SESSION_CLOSED:
    case ErrorCodes.NOT_FOUND:
    case ErrorCodes.PROTOCOL:
      return Exit.CONNECT;
    default:
      return Exit.FAILURE;
  }
}

function oneLine(err: unknown): string {
  const message = (err instanceof Error ? err.message : String(err)).split('\n')[0];
  return err instanceof NetchanError ? `${err.code}: ${message}` : message!;
}

let commandName = 'netchan';
function say(line: string): void {
  process.stderr.write(`${commandName}: ${line}\n`);
}

/**
 * Runs `stop` on the first SIGINT or SIGTERM and resolves with `code` once it is done; a second
 * signal exits at once.
 */
function untilSignal(stop: () => Promise<void>, code: number = Exit.OK): { stopped: Promise<number>; dispose(): void } {
  let stopping = false;
  let resolveStopped!: (code: number) => void;
  const stopped = new Promise<number>((r) => (resolveStopped = r));
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(Exit.INTERRUPTED);
    stopping = true;
    say(`${signal}: closing`);
    stop().then(
      () => resolveStopped(code),
      (err: unknown) => {
        say(oneLine(err));
        resolveStopped(Exit.FAILURE);
      },
    );
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    stopped,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** JSON for values JSON cannot hold: BigInt as a string, Map as an object, Set as an array, bytes as base64. */
function toJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) => {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), x]));
    if (v instanceof Set) return [...v];
    if (v instanceof Uint8Array) return Buffer.from(v).toString('base64');
    if (v && typeof v === 'object' && (v as { type?: unknown }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
      return Buffer.from((v as { data: number[] }).data).toString('base64');
    }
    if (v instanceof Error) return { name: v.name, message: v.message };
    return v;
  }) ?? 'null';
}

function writeLine(line: string): Promise<void> {
  return process.stdout.write(`${line}\n`) ? Promise.resolve() : new Promise((r) => process.stdout.once('drain', () => r()));
}

async function* jsonLines(): AsyncGenerator<unknown> {
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  let n = 0;
  for await (const line of rl) {
    n++;
    if (line.trim() === '') continue;
    try {
      yield JSON.parse(line) as unknown;
    } catch {
      throw new UsageError(`stdin line ${n} is not JSON: ${line.slice(0, 60)}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// commands

async function runGateway(values: Values): Promise<number> {
  const { host, port } = hostPort(required(values, 'listen'));
  const rules: GatewayRule[] = list(values, 'allow').map((text) => {
    const eq = text.lastIndexOf('=');
    return eq > 0 ? { principal: text.slice(0, eq), allow: text.slice(eq + 1) } : text;
  });
  if (rules.length === 0) throw new UsageError('nothing is allowed: give at least one --allow HOST:PORT');
  const tokens = tokensOf(values);
  const requestCert = values['request-cert'] === true;
  if (tokens.length === 0 && !requestCert) {
    throw new UsageError('a gateway needs authentication: --token, --token-file (or NETCHAN_TOKEN) or --request-cert with --ca');
  }
  const limits = {
    ...optional('maxConnectionsPerSession', integer(values, 'max-connections-per-session', 1)),
    ...optional('maxConnectionsPerPrincipal', integer(values, 'max-connections-per-principal', 1)),
    ...optional('connectTimeoutMs', integer(values, 'connect-timeout-ms', 1)),
    ...optional('idleTimeoutMs', integer(values, 'idle-timeout-ms', 0)),
  };
  try {
    createGateway(createServer({ insecure: true }), { allow: rules }); // checks the rules before anything else
  } catch (err) {
    throw new UsageError(`--allow: ${(err as Error).message}`);
  }
  const caFile = str(values, 'ca');
  if (requestCert && caFile === undefined) throw new UsageError('--request-cert needs --ca (the CA client certificates are signed by)');
  const insecure = values.insecure === true;
  let key: string | undefined;
  let cert: string | undefined;
  const certFile = str(values, 'cert');
  const keyFile = str(values, 'key');
  if ((certFile === undefined) !== (keyFile === undefined)) throw new UsageError('--cert and --key go together');
  if (certFile !== undefined && keyFile !== undefined) {
    cert = readFile(certFile, 'certificate');
    key = readFile(keyFile, 'key');
  } else if (!insecure) {
    const dev = await ensureDevCertificates(devCertificateDir());
    cert = dev.cert;
    key = dev.key;
    say(`using the development certificate; clients trust ${path.join(dev.dir, 'ca.pem')}`);
  }
  const accepts = tokenChecker(tokens);
  const server = createServer({
    key,
    cert,
    insecure,
    path: str(values, 'path') ?? '/',
    ...(caFile !== undefined ? { ca: readFile(caFile, 'CA file') } : {}),
    requestCert,
    authenticate: ({ headers, principal }) => {
      if (tokens.length > 0 && !accepts(headers.authorization)) return false;
      return principal !== '' ? principal : 'token';
    },
  });
  createGateway(server, { allow: rules, ...limits });
  if (values.quiet !== true) subscribe(GATEWAY_AUDIT_CHANNEL, (event) => void writeLine(JSON.stringify(event)));
  const address = await server.listen(port, host);
  const scheme = insecure ? 'http' : 'https';
  say(`listening on ${scheme}://${hostForUrl(address.address)}:${address.port}${server.path} (allow: ${list(values, 'allow').join(', ')})`);
  const { stopped } = untilSignal(() => server.close());
  return stopped;
}

function optional<K extends string>(key: K, value: number | undefined): Partial<Record<K, number>> {
  return value === undefined ? {} : ({ [key]: value } as Record<K, number>);
}

function hostPort(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  if (!m || Number(m[3]) > 65535) throw new UsageError(`expected HOST:PORT, got ${JSON.stringify(text)}`);
  return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
}

function hostForUrl(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

async function runForward(values: Values): Promise<number> {
  const via = required(values, 'via');
  const target = required(values, 'target');
  let url: URL;
  try {
    url = new URL(via);
  } catch {
    throw new UsageError(`--via must be a URL (https://host:port/), got ${JSON.stringify(via)}`);
  }
  const options = await clientOptionsOf(values, url);
  const session = await connect(url, options);
  let closing = false;
  const lost = new Promise<number>((resolve) => {
    session.once('close', (err: unknown) => {
      if (closing) return;
      say(`session ended: ${oneLine(err)}`);
      resolve(Exit.CONNECT);
    });
  });
  let fw;
  try {
    fw = await session.forward({ local: str(values, 'local') ?? '127.0.0.1:0', target });
  } catch (err) {
    await session.close();
    throw err;
  }
  fw.on('connectionError', (err: unknown) => say(`connection to ${target} refused: ${oneLine(err)}`));
  session.on('disconnect', (err: unknown) => say(`connection to the gateway lost (${oneLine(err)}); resuming`));
  session.on('reconnect', () => say('resumed'));
  const a = fw.address;
  say(`forwarding ${hostForUrl(a.address)}:${a.port} -> ${target} via ${url.href}`);
  const signals = untilSignal(async () => {
    closing = true;
    await fw.close();
    await session.close();
  });
  const code = await Promise.race([signals.stopped, lost]);
  signals.dispose();
  if (code !== Exit.OK) await fw.close();
  return code;
}

async function runListen(values: Values, positionals: string[]): Promise<number> {
  if (positionals.length > 1) throw new UsageError('give one address');
  const insecure = values.insecure === true;
  const address = positionals[0] ?? '127.0.0.1:9876';
  urlOf(address, insecure);
  const certFile = str(values, 'cert');
  const keyFile = str(values, 'key');
  if ((certFile === undefined) !== (keyFile === undefined)) throw new UsageError('--cert and --key go together');
  const tokens = tokensOf(values);
  const accepts = tokenChecker(tokens);
  const listener = await listen<unknown>(address, {
    insecure,
    ...(certFile !== undefined && keyFile !== undefined ? { cert: readFile(certFile, 'certificate'), key: readFile(keyFile, 'key') } : {}),
    ...optional('capacity', integer(values, 'capacity', 0)),
    ...(tokens.length > 0 ? { authenticate: ({ headers, principal }) => (accepts(headers.authorization) ? principal || 'token' : false) } : {}),
  });
  say(`listening on ${listener.url}`);
  const pump = (async () => {
    for await (const value of listener.receive) await writeLine(toJson(value));
  })();
  const feed = (async () => {
    for await (const value of jsonLines()) await listener.send.send(value);
    listener.send.close();
  })();
  feed.catch((err: unknown) => {
    say(oneLine(err));
    process.exitCode = exitCodeFor(err);
    listener.send.close();
  });
  pump.catch(() => undefined);
  const { stopped } = untilSignal(() => listener.close());
  return stopped;
}

/** The channel handle `send`/`recv` use: NAME on the server, or the cluster channel. */
async function openHandle(values: Values, positionals: string[], direction: 'send' | 'recv'): Promise<{ handle: ChannelLike<unknown> & { release(): void }; session: Session }> {
  if (positionals.length !== 1) throw new UsageError('give the server address: HOST:PORT or a URL');
  const url = urlOf(positionals[0]!, values.insecure === true);
  const options = await clientOptionsOf(values, url);
  const name = str(values, 'channel');
  if (name === undefined) {
    const dialer = await dial<unknown>(url.href, options);
    const [keep, drop] = direction === 'send' ? [dialer.send, dialer.receive] : [dialer.receive, dialer.send];
    drop.release();
    return { handle: keep, session: dialer.session };
  }
  const session = await connect(url, options);
  return { handle: session.channel<unknown>(name), session };
}

async function runSend(values: Values, positionals: string[]): Promise<number> {
  const { handle, session } = await openHandle(values, positionals, 'send');
  const signals = untilSignal(() => session.close(), Exit.INTERRUPTED);
  const work = (async () => {
    try {
      for await (const value of jsonLines()) await handle.send(value);
      if (values.close === true) handle.close();
      else handle.release();
      await session.close();
      return Exit.OK;
    } catch (err) {
      await session.close();
      throw err;
    }
  })();
  const code = await Promise.race([work, signals.stopped]);
  signals.dispose();
  return code;
}

async function runRecv(values: Values, positionals: string[]): Promise<number> {
  const count = integer(values, 'count', 1);
  const { handle, session } = await openHandle(values, positionals, 'recv');
  const signals = untilSignal(() => session.close(), Exit.INTERRUPTED);
  const work = (async () => {
    let n = 0;
    try {
      if (count !== 0) {
        for await (const value of handle) {
          await writeLine(toJson(value));
          if (++n === count) break;
        }
      }
      handle.release();
      await session.close();
      return Exit.OK;
    } catch (err) {
      await session.close();
      throw err;
    }
  })();
  const code = await Promise.race([work, signals.stopped]);
  signals.dispose();
  return code;
}

async function runCerts(values: Values): Promise<number> {
  const dir = str(values, 'dir') ?? devCertificateDir();
  const hosts = list(values, 'host');
  const client = str(values, 'client');
  const certs = await ensureDevCertificates(dir, { ...(hosts.length > 0 ? { hosts } : {}), ...(client !== undefined ? { clientName: client } : {}) });
  const at = (name: string) => path.join(certs.dir, name);
  const lines = [
    `${certs.created ? 'created' : 'reused'} development certificates in ${certs.dir}`,
    `  CA certificate:     ${at('ca.pem')}   (clients trust this: --ca)`,
    `  CA key:             ${at('ca-key.pem')}`,
    `  server certificate: ${at('server.pem')}`,
    `  server key:         ${at('server-key.pem')}`,
  ];
  if (certs.clientCert !== undefined) lines.push(`  client certificate: ${at('client.pem')}`, `  client key:         ${at('client-key.pem')}`);
  lines.push(`  SHA-256 fingerprint: ${certs.fingerprint}   (clients may pin it: --pin)`);
  process.stdout.write(`${lines.join('\n')}\n`);
  return Exit.OK;
}

async function runBench(values: Values): Promise<number> {
  const example = fileURLToPath(new URL('../examples/cluster.ts', import.meta.url));
  if (!existsSync(example)) throw new Error(`bench runs ${example}, which is part of the repository, not of the package`);
  const args: string[] = [];
  for (const name of ['clients', 'seconds', 'capacity']) {
    const v = integer(values, name, 1);
    if (v !== undefined) args.push(`--${name}`, String(v));
  }
  const child = spawn(process.execPath, ['--import', 'tsx', example, ...args], { stdio: 'inherit', cwd: fileURLToPath(new URL('..', import.meta.url)) });
  const signals = untilSignal(async () => void child.kill('SIGINT'), Exit.INTERRUPTED);
  const code = await new Promise<number>((resolve) => child.once('exit', (c) => resolve(c ?? Exit.INTERRUPTED)));
  signals.dispose();
  return code;
}

// ---------------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    const topic = first === 'help' ? rest[0] : undefined;
    if (topic !== undefined && commands[topic]) process.stdout.write(`${commands[topic].usage}\n`);
    else process.stdout.write(`${USAGE}\n`);
    return first === undefined ? Exit.USAGE : Exit.OK;
  }
  const command = commands[first];
  if (!command) {
    process.stderr.write(`netchan: unknown command ${JSON.stringify(first)}\n${USAGE}\n`);
    return Exit.USAGE;
  }
  commandName = `netchan ${first}`;
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: rest, options: command.options, strict: true, allowPositionals: true }) as { values: Values; positionals: string[] };
  } catch (err) {
    say(`${(err as Error).message.split(/\.\s|\n/)[0]} (netchan ${first} --help for the options)`);
    return Exit.USAGE;
  }
  if (parsed.values.help === true) {
    process.stdout.write(`${command.usage}\n`);
    return Exit.OK;
  }
  if (first !== 'listen' && first !== 'send' && first !== 'recv' && parsed.positionals.length > 0) {
    say(`unexpected argument ${JSON.stringify(parsed.positionals[0])} (netchan ${first} --help for the options)`);
    return Exit.USAGE;
  }
  try {
    return await command.run(parsed.values, parsed.positionals);
  } catch (err) {
    say(oneLine(err));
    return exitCodeFor(err);
  }
}

process.exitCode = await main(process.argv.slice(2));
// Anything still open (a half-closed socket, a timer) must not keep a finished command alive.
setTimeout(() => process.exit(), 200).unref();
