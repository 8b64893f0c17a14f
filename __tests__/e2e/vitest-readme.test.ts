/**
 * The README's Vitest quickstart, run the way a new user runs it: both packed tarballs
 * (jest-environment-pg and packages/vitest-environment-pg) installed into an empty directory with
 * vitest and pg, the README's own files, `vitest run`. Then the per-file opt-in of the same
 * section: `pg(options, { environment: false })` and `// @vitest-environment pg`, which Vitest
 * resolves to the packed vitest-environment-pg.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, cleanup, privateDir, settle } from '../helpers/jest-run';

/** The fenced blocks of the "Vitest quickstart" section whose first line names a file. */
function vitestQuickstartFiles(readme: string): Record<string, string> {
  const section = readme.split(/^### Vitest quickstart$/m)[1].split(/^#{2,3} /m)[0];
  const files: Record<string, string> = {};
  for (const m of section.matchAll(/```\w*\n(?:\/\/|--) ([\w./-]+)\n([\s\S]*?)```/g)) files[m[1]] = m[2];
  return files;
}

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

test('the README Vitest quickstart and the per-file opt-in pass from the packed tarballs in a fresh project', async () => {
  const files = vitestQuickstartFiles(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  expect(Object.keys(files).sort()).toEqual(['migrations/001_notes.sql', 'notes.test.js', 'vitest.config.mjs']);
  const dir = privateDir();
  dirs.push(dir);
  const project = path.join(dir, 'project');
  fs.mkdirSync(path.join(project, 'migrations'), { recursive: true });
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(project, name), text);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'vitest-quickstart', private: true }));
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: dir, JEST_PG_DATA_ROOT: dir, npm_config_loglevel: 'error', NO_COLOR: '1', CI: 'true' };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'VITEST', 'VITEST_POOL_ID', 'VITEST_WORKER_ID', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE']) delete env[k];
  const pack = (cwd: string) => execFileSync('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', dir], { cwd, env, encoding: 'utf8' }).trim().split('\n').pop()!;
  const main = pack(ROOT);
  const envPackage = pack(path.join(ROOT, 'packages', 'vitest-environment-pg'));
  // vitest and pg come from this repository's install (the versions a user gets from the registry),
  // so the test does not depend on the network; the packages themselves come from the tarballs.
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(dir, main), path.join(dir, envPackage), path.join(ROOT, 'node_modules', 'pg')], {
    cwd: project,
    env,
    stdio: 'pipe',
  });
  fs.symlinkSync(path.join(ROOT, 'node_modules', 'vitest'), path.join(project, 'node_modules', 'vitest'));
  const vitest = (args: string[]) => {
    const r = spawnSync(process.execPath, [path.join(project, 'node_modules', 'vitest', 'vitest.mjs'), 'run', ...args], { cwd: project, env, encoding: 'utf8' });
    return { status: r.status, output: r.stdout + r.stderr };
  };

  const quickstart = vitest([]);
  expect(quickstart.output).toMatch(/Tests\s+2 passed \(2\)/);
  expect(quickstart.output).toMatch(/jest-environment-pg: dropped 1 database, terminated 0 backends in \d+ ms/);
  expect(quickstart.status).toBe(0);

  // Per-file opt-in: only the file with the comment gets the sandbox.
  fs.mkdirSync(path.join(project, 'opt-in'));
  fs.writeFileSync(
    path.join(project, 'opt-in.config.mjs'),
    `import { defineConfig } from 'vitest/config';\nimport { pg } from 'jest-environment-pg/vitest';\n\n` +
      `export default defineConfig({\n  plugins: [pg({ migrations: './migrations' }, { environment: false })],\n  test: { include: ['opt-in/*.test.js'] },\n});\n`,
  );
  fs.writeFileSync(path.join(project, 'opt-in', 'db.test.js'), `// @vitest-environment pg\n${files['notes.test.js']}`);
  fs.writeFileSync(
    path.join(project, 'opt-in', 'plain.test.js'),
    `import { expect, test } from 'vitest';\n\ntest('no sandbox here', () => {\n  expect(process.env.DATABASE_URL).toBeUndefined();\n});\n`,
  );
  const optIn = vitest(['--config', 'opt-in.config.mjs']);
  expect(optIn.output).toMatch(/Test Files\s+2 passed \(2\)/);
  expect(optIn.output).toMatch(/Tests\s+3 passed \(3\)/);
  expect(optIn.output).toMatch(/jest-environment-pg: dropped 1 database, terminated 0 backends in \d+ ms/);
  expect(optIn.status).toBe(0);

  const left = await settle(dir);
  expect(left.processes).toEqual([]);
  expect(left.files.filter((f) => f !== 'project' && !f.endsWith('.tgz'))).toEqual([]);
}, 240_000);
