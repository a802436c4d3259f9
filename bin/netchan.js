#!/usr/bin/env node
// The `netchan` command (package.json "bin"). In a checkout (after `npm ci`) it runs the
// TypeScript source through tsx; in a built package, the compiled dist/bin/netchan.js.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const source = new URL('./netchan.ts', import.meta.url);
const built = new URL('../dist/bin/netchan.js', import.meta.url);
if (existsSync(fileURLToPath(source))) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import(built.href);
}
