#!/usr/bin/env node
// Copies the ABI and bytecode of the deployable contracts from forge's output into
// crates/chain/artifacts/, which the Rust bindings (alloy `sol!`) compile against.
//
//   node tools/artifacts.cjs          write the files (after `forge build`)
//   node tools/artifacts.cjs --check  exit 1 if a committed file differs from forge's output
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const contracts = ['Payment', 'Registry', 'TestToken'];
const check = process.argv.includes('--check');
let stale = [];

for (const name of contracts) {
  const built = path.join(root, 'contracts', 'out', `${name}.sol`, `${name}.json`);
  if (!fs.existsSync(built)) {
    console.error(`artifacts: ${built} is missing; run 'forge build' in contracts/ first`);
    process.exit(1);
  }
  const out = JSON.parse(fs.readFileSync(built, 'utf8'));
  const artifact = {
    abi: out.abi,
    bytecode: out.bytecode.object,
    deployedBytecode: out.deployedBytecode.object,
  };
  const text = JSON.stringify(artifact, null, 1) + '\n';
  const target = path.join(root, 'crates', 'chain', 'artifacts', `${name}.json`);
  if (check) {
    const committed = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : '';
    if (committed !== text) stale.push(path.relative(root, target));
  } else {
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, text);
  }
}
if (stale.length) {
  console.error(`artifacts: out of date with contracts/src: ${stale.join(', ')}`);
  console.error("artifacts: run 'tools/artifacts' and commit the result");
  process.exit(1);
}
