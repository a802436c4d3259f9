/**
 * Builds `netchan/browser`: lib/browser/index.ts and what it imports as one ESM bundle for web
 * pages, dist/browser/netchan.js (and a minified netchan.min.js), with no import of a Node
 * built-in left in it: the stream, event and buffer modules are their browser builds
 * (`readable-stream`, `events`, `buffer`), the rest of Node (TCP, TLS, V8) stubs that throw.
 * Prints each file's size, and gzipped.
 *
 *   npm run build:browser
 */
import { build, type Plugin } from 'esbuild';
import { gzipSync } from 'node:zlib';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const shims = path.join(root, 'lib/browser/shims');

/** Where each Node built-in the shared layers import goes in a page. */
const BUILTINS: Record<string, string> = {
  events: 'events/',
  stream: 'readable-stream',
  buffer: 'buffer/',
  diagnostics_channel: path.join(shims, 'diagnostics.ts'),
  util: path.join(shims, 'util.ts'),
  v8: path.join(shims, 'v8.ts'),
  vm: path.join(shims, 'v8.ts'),
};

/** `node:x` and bare `x` built-ins to their browser modules; the others to the throwing stub. */
const builtins: Plugin = {
  name: 'netchan-browser-builtins',
  setup(b) {
    const names = ['events', 'stream', 'buffer', 'diagnostics_channel', 'util', 'v8', 'vm', 'net', 'tls', 'http', 'https', 'http2', 'crypto', 'dns', 'os', 'path', 'fs', 'fs/promises', 'zlib', 'url', 'string_decoder'];
    const filter = new RegExp(`^(node:)?(${names.map((n) => n.replace('/', '\\/')).join('|')})$`);
    b.onResolve({ filter }, async (args) => {
      const name = args.path.replace(/^node:/, '');
      // a package's own dependency (readable-stream's `buffer`, `string_decoder`) resolves as a package
      if (!args.path.startsWith('node:') && (name === 'buffer' || name === 'events' || name === 'string_decoder') && !args.importer.startsWith(path.join(root, 'lib'))) return undefined;
      const target = BUILTINS[name];
      if (target === undefined) return { path: path.join(shims, 'unavailable.ts') };
      if (path.isAbsolute(target)) return { path: target };
      return b.resolve(target, { kind: args.kind, resolveDir: root });
    });
    // the Node-side `ws` package (client and server) is never what a page uses
    b.onResolve({ filter: /^ws$/ }, () => ({ path: path.join(shims, 'unavailable.ts') }));
  },
};

/**
 * Builds the bundle into `outdir`, as netchan.js and minified netchan.min.js; another `entry`
 * (the tests' page code) is bundled the same way, as `<name>.js` only. Returns the files written.
 */
export async function buildBrowser(outdir = path.join(root, 'dist/browser'), entry = path.join(root, 'lib/browser/index.ts')): Promise<string[]> {
  const files: string[] = [];
  const own = entry === path.join(root, 'lib/browser/index.ts');
  for (const minify of own ? [false, true] : [false]) {
    const name = own ? 'netchan' : path.basename(entry).replace(/\.ts$/, '');
    const outfile = path.join(outdir, minify ? `${name}.min.js` : `${name}.js`);
    await build({
      entryPoints: [entry],
      outfile,
      bundle: true,
      format: 'esm',
      platform: 'browser',
      target: 'es2022',
      minify,
      sourcemap: true,
      inject: [path.join(shims, 'globals.ts')],
      define: { 'process.env.NODE_DEBUG': '""', global: 'globalThis' },
      plugins: [builtins],
      logLevel: 'warning',
      legalComments: 'eof',
    });
    files.push(outfile);
  }
  return files;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  for (const file of await buildBrowser()) {
    const bytes = await readFile(file);
    console.log(`${path.relative(root, file)}: ${(bytes.length / 1024).toFixed(1)} KiB, ${(gzipSync(bytes).length / 1024).toFixed(1)} KiB gzipped`);
  }
}
