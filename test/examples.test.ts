/**
 * The examples run as tests: each is started as a user would (tsx, short settings) and must exit
 * 0 and print what it promises.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const root = fileURLToPath(new URL('../', import.meta.url));

async function run(script: string, args: string[]): Promise<{ code: number | null; out: string }> {
  const certDir = await mkdtemp(path.join(tmpdir(), 'netchan-example-certs-'));
  try {
    return await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, script), ...args], {
        cwd: root,
        env: { ...process.env, NETCHAN_DEV_CERTS: certDir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', reject);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
  } finally {
    await rm(certDir, { recursive: true, force: true });
  }
}

describe('examples', function () {
  this.timeout(90_000);

  it('cluster (npm run demo): clients echo tasks, the table shows nothing lost', async () => {
    const { code, out } = await run('examples/cluster.ts', ['--clients', '5', '--seconds', '2']);
    expect(out).to.match(/clients: 5 connected/);
    expect(out).to.match(/^lost\s+0\s*$/m);
    expect(out).to.include('demo finished: nothing lost');
    expect(code).to.equal(0);
  });

  it('cluster --servers 2 (npm run demo -- --servers 2): two servers share the channels on JetStream, clients on both, nothing lost', async () => {
    const { code, out } = await run('examples/cluster.ts', ['--servers', '2', '--clients', '4', '--seconds', '2']);
    expect(out).to.match(/shared channels: netchan.out, netchan.in on JetStream/);
    expect(out).to.match(/4 clients, 2 servers sharing the channels on JetStream/);
    // the clients are spread: each server served two of them
    expect(out.match(/^server: 2 sessions/gm)?.length).to.equal(2);
    expect(out).to.match(/^lost\s+0\s*$/m);
    expect(out).to.include('demo finished: nothing lost');
    expect(code).to.equal(0);
  });

  it('multi-client: every answer reaches the client that asked', async () => {
    const { code, out } = await run('examples/multi-client.ts', ['--clients', '4', '--seconds', '1']);
    expect(out).to.match(/4 clients, \d+ answers, each to the client that asked: yes/);
    expect(code).to.equal(0);
  });

  it('request-reply: 1000 requests with reply channels and an 8 MiB upload', async () => {
    const { code, out } = await run('examples/request-reply.ts', []);
    expect(out).to.match(/wrong answers: 0/);
    expect(out).to.match(/received upload "blob.bin": 8388608 bytes/);
    expect(code).to.equal(0);
  });
});
