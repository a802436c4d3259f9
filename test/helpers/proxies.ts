/**
 * Real reverse proxies for tests: nginx, HAProxy (and Caddy, when installed) started on a free
 * loopback port from the configuration templates in test/fixtures/proxies/, each in its own
 * temporary directory (configuration, certificates, pid file, logs and temp paths all inside
 * it). `stop()` kills the process, waits for it to exit and removes the directory; a process
 * 'exit' hook kills whatever a dying test run left behind.
 *
 * The templates are what docs/proxies.md shows (test/proxies.test.ts checks that): placeholders
 * `{{name}}` are filled in by {@link renderTemplate}; the few lines a test run needs on top (no
 * daemon, paths in the temporary directory) are added here, outside the templates.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** The configuration templates, by file name under test/fixtures/proxies/. */
export type TemplateName = 'nginx-h2.conf' | 'nginx-h2c.conf' | 'nginx-ws.conf' | 'haproxy.cfg' | 'Caddyfile';

const fixtures = new URL('../fixtures/proxies/', import.meta.url);

/** The raw text of a template, placeholders and all. */
export function templateText(name: TemplateName): string {
  return readFileSync(new URL(name, fixtures), 'utf8');
}

/** Fills a template's `{{placeholders}}`; a placeholder without a value is an error. */
export function renderTemplate(name: TemplateName, vars: Record<string, string | number>): string {
  return templateText(name).replace(/\{\{(\w+)\}\}/g, (_, key: string) => {
    const value = vars[key];
    if (value === undefined) throw new Error(`${name}: no value for {{${key}}}`);
    return String(value);
  });
}

/**
 * The values docs/proxies.md shows in place of the placeholders: a proxy on port 443 in front of
 * a netchan server on 127.0.0.1:8443 whose certificate names `app.internal`.
 */
export const docValues: Record<TemplateName, Record<string, string | number>> = {
  'nginx-h2.conf': { listen: 443, name: 'app.internal', cert: '/etc/nginx/tls/proxy.pem', key: '/etc/nginx/tls/proxy-key.pem', backend: '127.0.0.1:8443', ca: '/etc/nginx/tls/backend-ca.pem' },
  'nginx-h2c.conf': { listen: 443, name: 'app.internal', cert: '/etc/nginx/tls/proxy.pem', key: '/etc/nginx/tls/proxy-key.pem', backend: '127.0.0.1:8080' },
  'nginx-ws.conf': { listen: 443, name: 'app.internal', cert: '/etc/nginx/tls/proxy.pem', key: '/etc/nginx/tls/proxy-key.pem', backend: '127.0.0.1:8443', ca: '/etc/nginx/tls/backend-ca.pem' },
  'haproxy.cfg': { listen: ':443', pem: '/etc/haproxy/tls/proxy.pem', backend: '127.0.0.1:8443', ca: '/etc/haproxy/tls/backend-ca.pem', name: 'app.internal' },
  Caddyfile: { name: 'app.internal', port: 443, host: '0.0.0.0', cert: '/etc/caddy/tls/proxy.pem', key: '/etc/caddy/tls/proxy-key.pem', backend: '127.0.0.1:8443', ca: '/etc/caddy/tls/backend-ca.pem' },
};

/** What a proxy presents to clients and trusts of its backend. */
export interface ProxyTls {
  /** The certificate clients see (PEM) and its key. */
  cert: string;
  key: string;
  /** The CA that signed the backend's certificate (PEM). */
  ca: string;
  /** The name the backend's certificate carries, checked by the proxy (and sent as SNI). */
  name: string;
}

export interface StartProxyOptions {
  template: TemplateName;
  /** The backend's address, `host:port`. */
  backend: string;
  tls: ProxyTls;
  /** Listen on this loopback port (to restart a proxy where it was); default a free one. */
  port?: number;
}

export interface RunningProxy {
  kind: 'nginx' | 'haproxy' | 'caddy';
  port: number;
  /** The temporary directory holding configuration, logs and pid file. */
  dir: string;
  /** The rendered configuration file the process runs. */
  config: string;
  /** The last few KiB of the proxy's logs (for assertion messages). */
  logs(): string;
  /** Stops the process (SIGTERM, SIGKILL after 5 s), waits for it to exit, removes the directory. Safe to call twice. */
  stop(): Promise<void>;
}

/** Where a proxy's program is, if installed. */
export function proxyProgram(kind: RunningProxy['kind']): string | undefined {
  const dirs = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', ...(process.env.PATH ?? '').split(':')];
  for (const dir of dirs) if (dir && existsSync(path.join(dir, kind))) return path.join(dir, kind);
  return undefined;
}

/** A free port on 127.0.0.1 (probed: bound to port 0, then released). */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve, reject) => s.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function kindOf(template: TemplateName): RunningProxy['kind'] {
  return template.startsWith('nginx') ? 'nginx' : template.startsWith('haproxy') ? 'haproxy' : 'caddy';
}

/** Starts the proxy a template is for; resolves once it accepts connections (within 15 s). */
export async function startProxy(options: StartProxyOptions): Promise<RunningProxy> {
  const kind = kindOf(options.template);
  const program = proxyProgram(kind);
  if (!program) throw new Error(`${kind} is not installed (Debian: apt-get install ${kind})`);
  const dir = mkdtempSync(path.join(os.tmpdir(), `netchan-${kind}-`));
  const port = options.port ?? (await freePort());
  const file = (name: string, text: string): string => {
    const p = path.join(dir, name);
    writeFileSync(p, text, { mode: 0o600 });
    return p;
  };
  const cert = file('proxy.pem', options.tls.cert);
  const key = file('proxy-key.pem', options.tls.key);
  const ca = file('backend-ca.pem', options.tls.ca);
  const vars = { name: options.tls.name, backend: options.backend, cert, key, ca };
  let config: string;
  let args: string[];
  let env: NodeJS.ProcessEnv = process.env;
  let logFile: string;
  if (kind === 'nginx') {
    for (const sub of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(path.join(dir, sub));
    logFile = path.join(dir, 'error.log');
    const body = renderTemplate(options.template, { ...vars, listen: `127.0.0.1:${port}` });
    config = file(
      'nginx.conf',
      [
        '# test harness (test/helpers/proxies.ts): foreground, everything in this directory',
        'daemon off;',
        // as root, workers would switch to nobody, who cannot read this 0700 directory
        ...(process.getuid?.() === 0 ? ['user root;'] : []),
        'worker_processes 1;',
        `pid ${dir}/nginx.pid;`,
        `error_log ${logFile} info;`,
        'events { worker_connections 1024; }',
        'http {',
        `    access_log ${dir}/access.log;`,
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((sub) => `    ${sub}_temp_path ${dir}/${sub};`),
        body.replace(/^(?=.)/gm, '    '),
        '}',
        '',
      ].join('\n'),
    );
    args = ['-p', `${dir}/`, '-c', config, '-e', logFile];
  } else if (kind === 'haproxy') {
    logFile = path.join(dir, 'haproxy.log');
    const pem = file('proxy-combined.pem', `${options.tls.cert.trim()}\n${options.tls.key.trim()}\n`);
    config = file('haproxy.cfg', renderTemplate(options.template, { ...vars, pem, listen: `127.0.0.1:${port}` }));
    args = ['-db', '-f', config];
  } else {
    logFile = path.join(dir, 'caddy.log');
    const body = renderTemplate(options.template, { ...vars, port, host: '127.0.0.1' });
    const global = ['# test harness (test/helpers/proxies.ts)', '{', '\tadmin off', '\tauto_https disable_redirects', `\tstorage file_system ${dir}/data`, '}', ''];
    config = file('Caddyfile', `${global.join('\n')}\n${body}`);
    args = ['run', '--config', config, '--adapter', 'caddyfile'];
    env = { ...process.env, HOME: dir, XDG_DATA_HOME: `${dir}/data`, XDG_CONFIG_HOME: `${dir}/config` };
  }
  let output = '';
  const child = spawn(program, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  for (const s of [child.stdout!, child.stderr!]) {
    s.setEncoding('utf8');
    s.on('data', (c: string) => (output = (output + c).slice(-8000)));
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => running.delete(child));
  const logs = (): string => {
    let text = output;
    try {
      if (kind !== 'haproxy') text += readFileSync(logFile, 'utf8').slice(-8000);
    } catch {
      // no log yet
    }
    return text;
  };
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await acceptsConnections(port, exited, 15_000);
  } catch (err) {
    const text = logs();
    await stop();
    throw new Error(`${kind} did not start: ${(err as Error).message}\n${text}`);
  }
  return { kind, port, dir, config, logs, stop };
}

/** Resolves once 127.0.0.1:`port` accepts a TCP connection; rejects if the process exits first. */
export async function acceptsConnections(port: number, exited: Promise<void>, timeoutMs: number): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone) throw new Error('the process exited');
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok && !gone) return;
    if (Date.now() > deadline) throw new Error(`no connection on port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
