#!/usr/bin/env node
/**
 * The registry this project is developed against does not serve every platform build of
 * packages with per-platform optional dependencies (@swc/core-*, @unrs/resolver-binding-*),
 * so npm leaves them out of package-lock.json and `npm ci` then refuses the lock. This adds
 * the missing entries (version, os/cpu from the name, optional) so `npm ci` skips them on
 * other platforms as it would with a complete lock. Run after `npm install` changes the lock.
 */
const fs = require('fs');
const path = require('path');
const file = path.join(__dirname, '..', 'package-lock.json');
const lock = JSON.parse(fs.readFileSync(file, 'utf8'));
const pkgs = lock.packages;
const OS = ['darwin', 'linux', 'win32', 'freebsd', 'android', 'openharmony', 'netbsd', 'openbsd', 'sunos', 'aix'];
const CPU = ['arm64', 'x64', 'ia32', 'arm', 'ppc64', 's390x', 'riscv64', 'loong64', 'wasm32'];
let added = 0;
for (const [where, meta] of Object.entries(pkgs)) {
  for (const [name, range] of Object.entries(meta.optionalDependencies ?? {})) {
    const base = where ? `${where}/node_modules/${name}` : `node_modules/${name}`;
    if (pkgs[base] || pkgs[`node_modules/${name}`]) continue;
    const parts = name.split('/').pop().split('-');
    const os = OS.find((o) => parts.includes(o));
    const cpu = CPU.find((c) => parts.includes(c));
    if (!os || !cpu) continue; // not a platform build: leave it to npm
    const entry = { version: range.replace(/^[\^~=]/, ''), cpu: [cpu], dev: meta.dev || undefined, license: meta.license, optional: true, os: [os] };
    if (parts.includes('musl') || parts.includes('musleabihf')) entry.libc = ['musl'];
    else if (os === 'linux') entry.libc = ['glibc'];
    pkgs[`node_modules/${name}`] = JSON.parse(JSON.stringify(entry));
    added++;
  }
}
const sorted = Object.fromEntries(Object.entries(pkgs).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0)));
lock.packages = sorted;
fs.writeFileSync(file, JSON.stringify(lock, null, 2) + '\n');
console.log(`lock-platform-stubs: added ${added} missing platform entries`);
