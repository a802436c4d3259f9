/**
 * The server processes of bench/net.ts and bench/bytes.ts: `bench/net-server.ts <peer>` under tsx,
 * with the certificates in its environment; it prints `{port}` once listening and exits when its
 * stdin closes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** Starts the server of `peer`; `env` adds to this process's environment. */
export async function startPeer(peer: string, env: Record<string, string>, nodeOptions: string[] = []): Promise<{ port: number; child: ChildProcess }> {
  const child = spawn(process.execPath, [...nodeOptions, '--import', 'tsx', fileURLToPath(new URL('./net-server.ts', import.meta.url)), peer], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const rl = createInterface({ input: child.stdout! });
  const line = await new Promise<string>((resolve, reject) => {
    rl.once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${peer} server exited with ${code}`)));
  });
  return { port: (JSON.parse(line) as { port: number }).port, child };
}

/** Ends a server by closing its stdin; SIGKILLs it after 2 s (10 s when it writes a profile). */
export function stopPeer(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.stdin!.end();
    setTimeout(() => child.kill('SIGKILL'), graceMs).unref();
  });
}
