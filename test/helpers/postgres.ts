/**
 * A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `postgres` on a
 * free loopback port with its unix socket in that directory, trust authentication, no fsync.
 * PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (runuser).
 * `stop()` shuts it down and removes the directory; a process 'exit' hook kills it if a test
 * run dies first.
 */
import { execFile, spawn } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The directory of the newest installed PostgreSQL's programs, if any. */
export function postgresBinDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root)
      .filter((v) => existsSync(path.join(root, v, 'bin', 'initdb')))
      .sort((a, b) => Number(b) - Number(a));
    if (versions[0] !== undefined) return path.join(root, versions[0], 'bin');
  }
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'postgres'))) return dir;
  return undefined;
}

/** The psql client, if installed. */
export function psqlPath(): string | undefined {
  const bin = postgresBinDir();
  if (bin && existsSync(path.join(bin, 'psql'))) return path.join(bin, 'psql');
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(path.join(dir, 'psql'))) return path.join(dir, 'psql');
  return undefined;
}

export interface Postgres {
  host: '127.0.0.1';
  port: number;
  user: 'postgres';
  /** Stops the server and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const running = new Set<number>();
process.once('exit', () => {
  for (const pid of running) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // already gone
    }
  }
});

/** Starts PostgreSQL; throws when it is not installed or does not come up within 30 s. */
export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (Debian: apt-get install postgresql)');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'netchan-pg-'));
  const data = path.join(dir, 'data');
  const asRoot = process.getuid?.() === 0;
  const wrap = (cmd: string, args: string[]): [string, string[]] => (asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
  let pid: number | undefined;
  const stop = async (): Promise<void> => {
    if (pid !== undefined) {
      const p = pid;
      pid = undefined;
      try {
        process.kill(p, 'SIGINT'); // fast shutdown
        const deadline = Date.now() + 10_000;
        while (alive(p) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        if (alive(p)) process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
      running.delete(p);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (asRoot) {
      const { stdout } = await run('id', ['-u', 'postgres']);
      const { stdout: gid } = await run('id', ['-g', 'postgres']);
      chownSync(dir, Number(stdout.trim()), Number(gid.trim()));
    }
    const [initCmd, initArgs] = wrap(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
    await run(initCmd, initArgs, { cwd: dir });
    const port = await freePort();
    const [cmd, args] = wrap(path.join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off', '-c', 'full_page_writes=off']);
    const child = spawn(cmd, args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (c: string) => (log = (log + c).slice(-4000)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`PostgreSQL did not start within 30 s:\n${log}`)), 30_000);
      const check = (): void => {
        if (/ready to accept connections/.test(log)) {
          clearTimeout(timer);
          child.stderr!.off('data', check);
          resolve();
        }
      };
      child.stderr!.on('data', check);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`PostgreSQL exited with ${code}:\n${log}`));
      });
    });
    child.removeAllListeners('exit');
    child.unref();
    pid = Number(readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    running.add(pid);
    return { host: '127.0.0.1', port, user: 'postgres', stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
