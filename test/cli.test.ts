/**
 * The `netchan` command line, spawned as a user would run it (`bin/netchan.js`, the package's
 * bin entry): help and usage errors, a gateway and a forwarder in front of a real PostgreSQL
 * queried with psql, refusals with their exit codes and audit lines, channels from the shell,
 * certificates, and SIGINT closing cleanly.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';
import { testCertificates } from './helpers/certs.js';
import { onTeardown, teardown } from './helpers/net.js';
import { postgresBinDir, psqlPath, startPostgres, type Postgres } from './helpers/postgres.js';

const CLI = fileURLToPath(new URL('../bin/netchan.js', import.meta.url));
const runFile = promisify(execFile);

/** A temporary directory for this file's runs: the development certificates of the children live here. */
const home = mkdtempSync(path.join(os.tmpdir(), 'netchan-cli-'));
after(() => rmSync(home, { recursive: true, force: true }));
const childEnv = { ...process.env, NETCHAN_DEV_CERTS: path.join(home, 'dev-certs'), NETCHAN_TOKEN: '' };

interface Cli {
  child: ChildProcess;
  stdout: string[];
  stderr: string[];
  /** Resolves with the first line (stdout or stderr) matching `re`, already seen or to come. */
  line(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
}

/** Starts `netchan ...args` (killed on teardown if still running). */
function startCli(args: string[], options: { stdin?: string; keepStdin?: boolean } = {}): Cli {
  const child = spawn(process.execPath, [CLI, ...args], { env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  const waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  const onLine = (store: string[]) => (line: string) => {
    store.push(line);
    for (const w of [...waiters]) {
      const m = w.re.exec(line);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  createInterface({ input: child.stdout! }).on('line', onLine(stdout));
  createInterface({ input: child.stderr! }).on('line', onLine(stderr));
  if (options.stdin !== undefined) child.stdin!.write(options.stdin);
  if (!options.keepStdin) child.stdin!.end();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  onTeardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return {
    child,
    stdout,
    stderr,
    exited,
    line(re, timeoutMs = 15_000) {
      for (const l of [...stdout, ...stderr]) {
        const m = re.exec(l);
        if (m) return Promise.resolve(m);
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no line matching ${re} within ${timeoutMs} ms; stdout: ${stdout.join(' | ')}; stderr: ${stderr.join(' | ')}`)), timeoutMs);
        waiters.push({
          re,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
      });
    },
  };
}

/** Runs `netchan ...args` to the end. */
async function runCli(args: string[], stdin?: string): Promise<{ code: number | null; stdout: string[]; stderr: string[] }> {
  const cli = startCli(args, stdin === undefined ? {} : { stdin });
  const code = await cli.exited;
  await new Promise((r) => setImmediate(r));
  return { code, stdout: cli.stdout, stderr: cli.stderr };
}

async function certFiles(): Promise<{ ca: string; cert: string; key: string }> {
  await testCertificates(); // made once, in certs/test/
  const dir = fileURLToPath(new URL('../certs/test/', import.meta.url));
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server-key.pem') };
}

/** Starts `netchan gateway` with the test certificates and a token file; resolves once it listens. */
async function startGateway(allow: string[], token = 'let-me-in'): Promise<{ cli: Cli; url: string }> {
  const { cert, key } = await certFiles();
  const tokenFile = path.join(home, `token-${Math.random().toString(36).slice(2)}`);
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const cli = startCli(['gateway', '--listen', '127.0.0.1:0', '--cert', cert, '--key', key, '--token-file', tokenFile, ...allow.flatMap((a) => ['--allow', a])]);
  const m = await cli.line(/listening on https:\/\/127\.0\.0\.1:(\d+)\//);
  return { cli, url: `https://localhost:${m[1]}/` };
}

/** Starts `netchan forward`; resolves with the local port once it listens. */
async function startForward(url: string, target: string, extra: string[] = [], token = 'let-me-in'): Promise<{ cli: Cli; port: number }> {
  const { ca } = await certFiles();
  const cli = startCli(['forward', '--via', url, '--ca', ca, '--token', token, '--target', target, ...extra]);
  const m = await cli.line(/forwarding 127\.0\.0\.1:(\d+) -> /);
  return { cli, port: Number(m[1]) };
}

async function psql(port: number, sql: string): Promise<string> {
  const { stdout } = await runFile(psqlPath()!, ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    env: { ...process.env, PGCONNECT_TIMEOUT: '10' },
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout.trim();
}

async function expectPsqlFails(port: number): Promise<void> {
  try {
    await psql(port, 'select 1');
  } catch {
    return;
  }
  throw new Error('psql succeeded through a target the gateway should refuse');
}

function auditLines(cli: Cli): Record<string, unknown>[] {
  return cli.stdout.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function waitFor(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('netchan command line', function () {
  this.timeout(60_000);
  afterEach(teardown);

  it('prints help for every command and exits 0; usage errors exit 2 with one line', async () => {
    const top = await runCli(['--help']);
    expect(top.code).to.equal(0);
    expect(top.stdout[0]).to.match(/^usage: netchan <command>/);
    for (const command of ['gateway', 'forward', 'listen', 'send', 'recv', 'certs', 'bench']) {
      const r = await runCli([command, '--help']);
      expect(r.code, command).to.equal(0);
      expect(r.stdout[0], command).to.match(new RegExp(`^usage: netchan ${command}`));
    }
    const none = await runCli([]);
    expect(none.code).to.equal(2);
    const unknown = await runCli(['frobnicate']);
    expect(unknown.code).to.equal(2);
    expect(unknown.stderr[0]).to.equal('netchan: unknown command "frobnicate"');
    const badOption = await runCli(['forward', '--bogus']);
    expect(badOption.code).to.equal(2);
    expect(badOption.stderr).to.deep.equal(["netchan forward: Unknown option '--bogus' (netchan forward --help for the options)"]);
    const open = await runCli(['gateway', '--allow', '10.0.0.1:22']);
    expect(open.code).to.equal(2);
    expect(open.stderr).to.have.length(1);
    expect(open.stderr[0]).to.match(/^netchan gateway: a gateway needs authentication/);
    const badRule = await runCli(['gateway', '--token', 't', '--allow', 'db']);
    expect(badRule.code).to.equal(2);
    expect(badRule.stderr[0]).to.match(/^netchan gateway: --allow: gateway rule must be HOST:PORT/);
  });

  describe('with PostgreSQL behind the gateway', function () {
    let pg: Postgres | undefined;
    before(async function () {
      // required, never skipped: .ci/run installs it (Debian: postgresql)
      if (!postgresBinDir() || !psqlPath()) throw new Error('PostgreSQL is not installed (Debian: apt-get install postgresql; .ci/run does this)');
      this.timeout(60_000);
      pg = await startPostgres();
    });
    after(async () => {
      await pg?.stop();
    });

    for (const transport of ['h2', 'ws'] as const) {
      it(`psql queries PostgreSQL through netchan forward and netchan gateway (${transport})`, async () => {
        const target = `127.0.0.1:${pg!.port}`;
        const gw = await startGateway([target]);
        const fw = await startForward(gw.url, target, ['--transport', transport]);
        expect(await psql(fw.port, 'select 6 * 7')).to.equal('42');
        expect(await psql(fw.port, 'select count(*), sum(g) from generate_series(1, 100000) g')).to.equal('100000|5000050000');
        // a bigger answer: 4 MB back through the tunnel
        expect(await psql(fw.port, "select length(string_agg(repeat('x', 1000), '')) from generate_series(1, 4000)")).to.equal('4000000');
        const big = await psql(fw.port, "select string_agg(repeat('y', 1000), '') from generate_series(1, 4000)");
        expect(big.length).to.equal(4_000_000);
        await waitFor(() => auditLines(gw.cli).length === 4, 'four audit lines');
        const audit = auditLines(gw.cli);
        for (const a of audit) expect(a).to.include({ outcome: 'closed', principal: 'token', target, address: '127.0.0.1' });
        expect(audit[3]!.bytesFromTarget as number).to.be.greaterThan(4_000_000);
        fw.cli.child.kill('SIGINT');
        expect(await fw.cli.exited).to.equal(0);
        gw.cli.child.kill('SIGINT');
        expect(await gw.cli.exited).to.equal(0);
      });
    }

    it('a wrong token: netchan forward exits 4 with one line, and the gateway audits it', async () => {
      const target = `127.0.0.1:${pg!.port}`;
      const gw = await startGateway([target]);
      const { ca } = await certFiles();
      const r = await runCli(['forward', '--via', gw.url, '--ca', ca, '--token', 'wrong', '--target', target]);
      expect(r.code).to.equal(4);
      expect(r.stderr).to.have.length(1);
      expect(r.stderr[0]).to.match(/^netchan forward: ERR_UNAUTHORIZED: /);
      await waitFor(() => auditLines(gw.cli).length === 1, 'an audit line');
      expect(auditLines(gw.cli)[0]).to.include({ outcome: 'unauthorized', code: 'ERR_UNAUTHORIZED', remoteAddress: '127.0.0.1' });
    });

    it('a denied target and a name resolving to loopback are refused per connection, audited', async () => {
      const target = `127.0.0.1:${pg!.port}`;
      const gw = await startGateway([`localhost:${pg!.port}`, '10.0.0.0/8:5432']);
      const denied = await startForward(gw.url, target);
      const byName = await startForward(gw.url, `localhost:${pg!.port}`);
      await expectPsqlFails(denied.port);
      await denied.cli.line(new RegExp(`connection to ${target.replace(/\./g, '\\.')} refused: ERR_FORBIDDEN_TARGET: target ${target.replace(/\./g, '\\.')} is not allowed for principal token`));
      await expectPsqlFails(byName.port);
      await byName.cli.line(/connection to localhost:\d+ refused: ERR_FORBIDDEN_TARGET: localhost resolves to (127\.0\.0\.1|::1), which is a loopback address/);
      await waitFor(() => auditLines(gw.cli).length === 2, 'two audit lines');
      const [a, b] = auditLines(gw.cli);
      expect(a).to.include({ outcome: 'forbidden', code: 'ERR_FORBIDDEN_TARGET', target, principal: 'token' });
      expect(b).to.include({ outcome: 'forbidden', code: 'ERR_FORBIDDEN_TARGET', target: `localhost:${pg!.port}` });
    });
  });

  it('channels from the shell: listen, send and recv with JSON lines (zero-config TLS on one machine)', async () => {
    const server = startCli(['listen', '127.0.0.1:0'], { stdin: '{"task":1}\n[1,2,3]\n', keepStdin: true });
    const m = await server.line(/listening on (https:\/\/127\.0\.0\.1:(\d+)\/)/);
    const address = `127.0.0.1:${m[2]}`;
    const recv = await runCli(['recv', address, '--count', '2']);
    expect(recv.code, recv.stderr.join('\n')).to.equal(0);
    expect(recv.stdout).to.deep.equal(['{"task":1}', '[1,2,3]']);
    const send = await runCli(['send', address], '"hello"\n\n{"n":5,"big":12345678901234567890}\n');
    expect(send.code, send.stderr.join('\n')).to.equal(0);
    await server.line(/^\{"n":5/);
    expect(server.stdout).to.deep.equal(['"hello"', '{"n":5,"big":12345678901234567000}']);
    const bad = await runCli(['send', address], 'not json\n');
    expect(bad.code).to.equal(2);
    expect(bad.stderr[0]).to.equal('netchan send: stdin line 1 is not JSON: not json');
    server.child.kill('SIGINT');
    expect(await server.exited).to.equal(0);
  });

  it('send to a port nobody listens on exits 3 with one line', async () => {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const { port } = s.address() as AddressInfo;
    await new Promise<void>((r) => s.close(() => r()));
    const { ca } = await certFiles();
    const r = await runCli(['send', `127.0.0.1:${port}`, '--ca', ca], '1\n');
    expect(r.code).to.equal(3);
    expect(r.stderr).to.have.length(1);
    expect(r.stderr[0]).to.match(/^netchan send: ERR_CONNECT: /);
  });

  it('certs creates the development certificates once, then reuses them', async () => {
    const dir = path.join(home, 'certs-test');
    const first = await runCli(['certs', '--dir', dir, '--client', 'me']);
    expect(first.code).to.equal(0);
    expect(first.stdout[0]).to.equal(`created development certificates in ${dir}`);
    expect(first.stdout.join('\n')).to.include(path.join(dir, 'client.pem'));
    const again = await runCli(['certs', '--dir', dir]);
    expect(again.stdout[0]).to.equal(`reused development certificates in ${dir}`);
    expect(again.stdout.at(-1)).to.match(/SHA-256 fingerprint: ([0-9A-F]{2}:){31}[0-9A-F]{2}/);
  });

  it('mTLS: --request-cert gives the principal cert:<CN>, which --allow PRINCIPAL= rules name', async () => {
    const echo = net.createServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    onTeardown(() => new Promise<void>((r) => echo.close(() => r())));
    const target = `127.0.0.1:${(echo.address() as AddressInfo).port}`;
    const { ca, cert, key } = await certFiles();
    const dir = path.dirname(ca);
    const gw = startCli(['gateway', '--listen', '127.0.0.1:0', '--cert', cert, '--key', key, '--ca', ca, '--request-cert', '--allow', `cert:test-client=${target}`]);
    const url = `https://localhost:${(await gw.line(/listening on https:\/\/127\.0\.0\.1:(\d+)\//))[1]}/`;
    const fw = startCli(['forward', '--via', url, '--ca', ca, '--cert', path.join(dir, 'client.pem'), '--key', path.join(dir, 'client-key.pem'), '--target', target]);
    const port = Number((await fw.line(/forwarding 127\.0\.0\.1:(\d+) -> /))[1]);
    const local = net.connect(port, '127.0.0.1');
    onTeardown(() => void local.destroy());
    local.end('mutual');
    let echoed = '';
    for await (const c of local) echoed += String(c);
    expect(echoed).to.equal('mutual');
    await waitFor(() => auditLines(gw).length === 1, 'an audit line');
    expect(auditLines(gw)[0]).to.include({ outcome: 'closed', principal: 'cert:test-client', target });
    // without a client certificate the TLS handshake itself fails
    const anonymous = await runCli(['forward', '--via', url, '--ca', ca, '--target', target]);
    expect(anonymous.code).to.equal(3);
    expect(anonymous.stderr[0]).to.match(/^netchan forward: ERR_TLS: /);
  });

  it('SIGINT closes a gateway with a live tunnel cleanly (exit 0)', async () => {
    const echo = net.createServer((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    onTeardown(() => new Promise<void>((r) => echo.close(() => r())));
    const target = `127.0.0.1:${(echo.address() as AddressInfo).port}`;
    const gw = await startGateway([target]);
    const fw = await startForward(gw.url, target);
    const local = net.connect(fw.port, '127.0.0.1');
    onTeardown(() => void local.destroy());
    local.write('ping');
    await new Promise((r) => local.once('data', r));
    const closed = new Promise<void>((r) => local.once('close', () => r()));
    local.on('error', () => undefined);
    gw.cli.child.kill('SIGINT');
    expect(await gw.cli.exited).to.equal(0);
    await closed;
    // the forwarder's session ends with the gateway: it says so and exits 3
    expect(await fw.cli.exited).to.equal(3);
    expect(fw.cli.stderr.at(-1)).to.match(/^netchan forward: session ended: /);
  });
});
