/**
 * A throwaway `nats-server -js` on loopback, for the demo (`npm run demo -- --servers 2`) and the
 * shared-channel benchmark: a free port, its store in a temporary directory, SIGKILLed and its
 * store removed by `stop()`. (The tests' own, restartable and clusterable, is test/helpers/nats.ts.)
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** A free TCP port on 127.0.0.1. */
async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1');
  await new Promise((r) => s.once('listening', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * Starts the server and resolves once it accepts connections (within 10 s); rejects if it cannot
 * be started (not installed) or does not come up.
 */
export async function startNatsServer(): Promise<{ url: string; stop(): void }> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'netchan-nats-'));
  const port = await freePort();
  const child = spawn('nats-server', ['-js', '-sd', dir, '-p', String(port), '-a', '127.0.0.1'], { stdio: 'ignore' });
  const stop = (): void => {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  let failed: Error | undefined;
  child.once('error', (err) => (failed = err));
  for (let i = 0; i < 200 && !failed; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (up) return { url: `nats://127.0.0.1:${port}`, stop };
    await new Promise((r) => setTimeout(r, 50));
  }
  stop();
  throw failed ?? new Error(`nats-server did not accept connections on ${port} within 10 s`);
}
