/**
 * The layers of lib/, one folder each, and what each may import. A folder imports only from the
 * folders below it; only lib/transport/ speaks node:http2 and ws. The rule is read from the
 * source's import statements, so a violation fails here before it grows into a cycle.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const root = fileURLToPath(new URL('../', import.meta.url));

/** Each layer and the layers it may import from (besides itself). */
export const LAYERS: Record<string, readonly string[]> = {
  core: [],
  wire: ['core'],
  transport: ['core', 'wire'],
  session: ['core', 'wire', 'transport'],
  client: ['core', 'wire', 'transport', 'session'],
  server: ['core', 'wire', 'transport', 'session'],
  gateway: ['core', 'wire', 'transport', 'session', 'client', 'server'],
  jetstream: ['core', 'wire', 'transport', 'session', 'server'],
  cluster: ['core', 'wire', 'transport', 'session', 'client', 'server'],
  browser: ['core', 'wire', 'transport', 'session', 'client'],
  middleware: ['core', 'wire', 'transport', 'session', 'server'],
};

/** Modules only the transport layer may import: the wire protocols under the session. */
const TRANSPORT_ONLY = new Set(['node:http2', 'http2', 'ws']);

interface Import {
  file: string;
  layer: string;
  specifier: string;
}

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...sources(p));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** The layer of a file under lib/ or middleware/; lib/index.ts (the package's entry) is none. */
function layerOf(file: string): string | null {
  const rel = path.relative(root, file).split(path.sep);
  if (rel[0] === 'middleware') return 'middleware';
  if (rel[0] === 'lib' && rel.length > 2) return rel[1] as string;
  return null;
}

function importsOf(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/^\s*(?:import|export)\s[^;]*?from\s*['"]([^'"]+)['"]/gms)) out.push(m[1] as string);
  for (const m of src.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1] as string);
  for (const m of src.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm)) out.push(m[1] as string);
  return out;
}

function allImports(): Import[] {
  const out: Import[] = [];
  for (const file of [...sources(path.join(root, 'lib')), ...sources(path.join(root, 'middleware'))]) {
    const layer = layerOf(file);
    if (layer === null) continue;
    for (const specifier of importsOf(file)) out.push({ file, layer, specifier });
  }
  return out;
}

/** What is wrong with one import, or null. */
function violation(imp: Import): string | null {
  const where = path.relative(root, imp.file);
  if (!(imp.layer in LAYERS)) return `${where}: folder ${imp.layer} is no layer of lib/ (test/layers.test.ts lists them)`;
  if (!imp.specifier.startsWith('.')) {
    if (TRANSPORT_ONLY.has(imp.specifier) && imp.layer !== 'transport') return `${where} imports ${imp.specifier}: only lib/transport/ may`;
    return null;
  }
  const target = path.resolve(path.dirname(imp.file), imp.specifier);
  const targetLayer = layerOf(target);
  if (targetLayer === null) return `${where} imports ${imp.specifier}: the package entry is for users, not for layers`;
  if (targetLayer === imp.layer) return null;
  const allowed = LAYERS[imp.layer] as readonly string[];
  if (!allowed.includes(targetLayer)) return `${where} (${imp.layer}) imports ${imp.specifier} (${targetLayer}): ${imp.layer} may import only ${allowed.join(', ') || 'nothing of lib/'}`;
  return null;
}

describe('layers: each folder of lib/ imports only from the layers below it', () => {
  it('every import of lib/ and middleware/ follows the rule', () => {
    const imports = allImports();
    expect(imports.length).to.be.greaterThan(50);
    const bad = imports.map(violation).filter((v): v is string => v !== null);
    expect(bad, bad.join('\n')).to.deep.equal([]);
  });

  it('the rule catches an upward import, a transport-only module and an unknown folder', () => {
    const file = path.join(root, 'lib/wire/frames.ts');
    expect(violation({ file, layer: 'wire', specifier: '../session/session.js' })).to.match(/wire may import only core/);
    expect(violation({ file, layer: 'wire', specifier: 'node:http2' })).to.match(/only lib\/transport\/ may/);
    expect(violation({ file: path.join(root, 'lib/misc/x.ts'), layer: 'misc', specifier: '../core/errors.js' })).to.match(/no layer/);
    expect(violation({ file, layer: 'wire', specifier: '../core/errors.js' })).to.equal(null);
    expect(violation({ file: path.join(root, 'lib/transport/x.ts'), layer: 'transport', specifier: 'node:http2' })).to.equal(null);
  });

  it('there are no import cycles between the files of lib/', () => {
    const edges = new Map<string, string[]>();
    for (const imp of allImports()) {
      if (!imp.specifier.startsWith('.')) continue;
      const target = path.resolve(path.dirname(imp.file), imp.specifier).replace(/\.js$/, '.ts');
      // type-only imports vanish at run time, but a cycle of them is still a design cycle
      const list = edges.get(imp.file) ?? [];
      list.push(target);
      edges.set(imp.file, list);
    }
    const state = new Map<string, 'open' | 'done'>();
    const cycles: string[] = [];
    const visit = (f: string, trail: string[]): void => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        cycles.push([...trail.slice(trail.indexOf(f)), f].map((x) => path.relative(root, x)).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const t of edges.get(f) ?? []) visit(t, [...trail, f]);
      state.set(f, 'done');
    };
    for (const f of edges.keys()) visit(f, []);
    expect(cycles, cycles.join('\n')).to.deep.equal([]);
  });
});
