#!/usr/bin/env node
// A `solc` that forge accepts, backed by the pinned npm `solc` (the emscripten build).
// forge has no network here to download a native solc, so foundry.toml points at this file.
// It answers `--version` in the native binary's format and compiles `--standard-json` from
// stdin; imports forge did not inline are read from disk relative to the working directory.
'use strict';
const fs = require('fs');
const path = require('path');
const solc = require('solc');

const args = process.argv.slice(2);
if (args.includes('--version')) {
  const version = solc.version().replace(/\.Emscripten\.clang$/, '.Linux.g++');
  process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${version}\n`);
  process.exit(0);
}
if (!args.includes('--standard-json')) {
  process.stderr.write('solc shim: only --version and --standard-json are supported\n');
  process.exit(2);
}

const valueOf = (flag) => {
  const i = args.indexOf(flag);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : undefined;
};
const roots = [valueOf('--base-path'), ...args.flatMap((a, i) => (a === '--include-path' ? [args[i + 1]] : [])), '.']
  .filter(Boolean);

function findImports(p) {
  for (const root of roots) {
    const full = path.resolve(root, p);
    if (fs.existsSync(full)) return { contents: fs.readFileSync(full, 'utf8') };
  }
  return { error: `File not found: ${p}` };
}

const input = fs.readFileSync(0, 'utf8');
const output = solc.compile(input, { import: findImports });
// The emscripten build may print SMT-solver notices prefixed with ">>>"; forge parses stdout as JSON.
process.stdout.write(output.split('\n').filter((l) => !l.startsWith('>>>')).join('\n'));
