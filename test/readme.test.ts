/**
 * The README's TypeScript examples type-check against the source, as a user would compile them:
 * each ```ts block becomes a module of its own, with `netchan` and `netchan/express` pointing at
 * lib/index.ts and middleware/express.ts, checked by the project's tsc under the project's
 * tsconfig. The blocks may use `key`, `cert`, `ca` (PEM) and `token` without defining them: the
 * README says where they come from, and a global declaration here stands for them. The blocks that
 * need no network run as well.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'chai';

const root = fileURLToPath(new URL('../', import.meta.url));
/**
 * A block that names any of these needs a server, a certificate or a token: it is only
 * type-checked. A server reached in memory (`connectInMemory`) needs none of them.
 */
const NETWORK = /\b(createServer|connect|listen|dial|key|cert|ca|token|fetch)\b/;
const needsNetwork = (code: string): boolean => NETWORK.test(code.replace(/\bconnectInMemory\b/g, '').replace(/\bcreateServer\b/g, code.includes('connectInMemory') ? '' : 'createServer'));

/** The ```ts blocks of a markdown text, with the line each starts on. */
function typescriptBlocks(markdown: string): { line: number; code: string }[] {
  const blocks: { line: number; code: string }[] = [];
  const lines = markdown.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (!/^```(ts|typescript)\s*$/.test(lines[i]!)) continue;
    const start = i + 1;
    while (++i < lines.length && !/^```\s*$/.test(lines[i]!));
    blocks.push({ line: start + 1, code: lines.slice(start, i).join('\n') });
  }
  return blocks;
}

/** The block with the package's import specifiers made relative paths from `dir` to the source. */
function rewriteImports(code: string, dir: string): string {
  const target = (file: string): string => {
    const rel = path.relative(dir, path.join(root, file)).split(path.sep).join('/');
    return rel.startsWith('.') ? rel : `./${rel}`;
  };
  return code
    .replace(/(from\s+|import\s*\(\s*)(['"])netchan\/express\2/g, (_m, lead: string, q: string) => `${lead}${q}${target('middleware/express.js')}${q}`)
    .replace(/(from\s+|import\s*\(\s*)(['"])netchan\/browser\2/g, (_m, lead: string, q: string) => `${lead}${q}${target('lib/browser/index.js')}${q}`)
    .replace(/(from\s+|import\s*\(\s*)(['"])netchan\2/g, (_m, lead: string, q: string) => `${lead}${q}${target('lib/index.js')}${q}`);
}

describe('README examples', function () {
  this.timeout(60_000);

  it('finds the TypeScript blocks and points their imports at the source', () => {
    const [block] = typescriptBlocks("text\n```ts\nimport { connect } from 'netchan';\nimport { netchan } from \"netchan/express\";\n```\n");
    expect(block!.line).to.equal(3);
    const out = rewriteImports(block!.code, path.join(root, '.tmp', 'x'));
    expect(out).to.include("from '../../lib/index.js'");
    expect(out).to.include('from "../../middleware/express.js"');
  });

  it('every TypeScript block of README.md type-checks against lib/index.ts and middleware/express.ts', async () => {
    const readme = await readFile(path.join(root, 'README.md'), 'utf8');
    const blocks = typescriptBlocks(readme);
    expect(blocks.length).to.be.greaterThan(3);
    // inside the package (type: module, node_modules above it) so the blocks compile as ESM
    const dir = path.join(root, '.tmp', `readme-check-${process.pid}`);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    try {
      const files = blocks.map((_, i) => `block-${String(i + 1).padStart(2, '0')}.ts`);
      await Promise.all(blocks.map((b, i) => writeFile(path.join(dir, files[i]!), `${rewriteImports(b.code, dir)}\nexport {};\n`)));
      // globals, which a block's own declarations of the same names shadow
      await writeFile(path.join(dir, 'given.d.ts'), 'export {};\ndeclare global {\n  const key: string;\n  const cert: string;\n  const ca: string;\n  const token: string;\n}\n');
      await writeFile(
        path.join(dir, 'tsconfig.json'),
        JSON.stringify({
          extends: path.relative(dir, path.join(root, 'tsconfig.json')).split(path.sep).join('/'),
          compilerOptions: { noEmit: true, noUnusedLocals: false, noUnusedParameters: false },
          include: ['*.ts'],
        }),
      );
      const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
      const result = await promisify(execFile)(process.execPath, [tsc, '-p', dir, '--pretty', 'false'], { cwd: root }).then(
        () => ({ ok: true, out: '' }),
        (err: { stdout?: string; stderr?: string }) => ({ ok: false, out: `${err.stdout ?? ''}${err.stderr ?? ''}` }),
      );
      // name the README line of each error, not the scratch file's
      const out = result.out.replace(/[^\s(]*block-(\d+)\.ts\((\d+),(\d+)\)/g, (_m, n: string, l: string, c: string) => `README.md(${blocks[Number(n) - 1]!.line + Number(l) - 1},${c})`);
      expect(out, out).to.equal('');
      expect(result.ok).to.equal(true);

      // the blocks that need no network, certificate or token run, and must exit 0
      const local = blocks.map((b, i) => ({ ...b, file: files[i]! })).filter((b) => !needsNetwork(b.code));
      expect(local.length).to.be.greaterThan(1);
      for (const b of local) {
        const run = await promisify(execFile)(process.execPath, ['--import', 'tsx', path.join(dir, b.file)], { cwd: root, timeout: 20_000 }).then(
          () => '',
          (err: { stdout?: string; stderr?: string; message: string }) => `README.md line ${b.line}: ${err.stderr || err.message}`,
        );
        expect(run, run).to.equal('');
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
