/**
 * The README's quickstart, run the way a new user runs it: the packed tarball installed into an
 * empty directory with jest and pg, the README's own files, `npx jest`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, cleanup, privateDir, settle } from '../helpers/jest-run';

/** The fenced blocks of the Quickstart section whose first line names a file. */
export function quickstartFiles(readme: string): Record<string, string> {
  const section = readme.split(/^## Quickstart$/m)[1].split(/^## /m)[0];
  const files: Record<string, string> = {};
  for (const m of section.matchAll(/```\w*\n(?:\/\/|--) ([\w./-]+)\n([\s\S]*?)```/g)) files[m[1]] = m[2];
  return files;
}

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

test('the README quickstart passes from the packed tarball in a fresh project', async () => {
  const files = quickstartFiles(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
  expect(Object.keys(files).sort()).toEqual(['jest.config.js', 'migrations/001_notes.sql', 'notes.test.js']);
  const dir = privateDir();
  dirs.push(dir);
  const project = path.join(dir, 'project');
  fs.mkdirSync(path.join(project, 'migrations'), { recursive: true });
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(project, name), text);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'quickstart', private: true }));
  const env = { ...process.env, TMPDIR: dir, JEST_PG_DATA_ROOT: dir, npm_config_loglevel: 'error' };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE']) delete env[k];
  const tgz = execFileSync('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', dir], { cwd: ROOT, env, encoding: 'utf8' }).trim().split('\n').pop()!;
  // jest and pg come from this repository's install (same versions a user gets from the registry),
  // so the test does not depend on the network; the package itself comes from the tarball.
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(dir, tgz), path.join(ROOT, 'node_modules', 'pg')], { cwd: project, env, stdio: 'pipe' });
  fs.symlinkSync(path.join(ROOT, 'node_modules', 'jest'), path.join(project, 'node_modules', 'jest'));
  const run = spawnSync(process.execPath, [path.join(project, 'node_modules', 'jest', 'bin', 'jest.js'), '--ci', '--cacheDirectory', path.join(dir, 'jest-cache')], {
    cwd: project,
    env,
    encoding: 'utf8',
  });
  const output = run.stdout + run.stderr;
  expect(output).toMatch(/Tests:\s+2 passed, 2 total/);
  expect(output).toMatch(/jest-environment-pg: dropped 1 database, terminated 0 backends in \d+ ms/);
  expect(run.status).toBe(0);
  const left = await settle(dir);
  expect(left.processes).toEqual([]);
  expect(left.files.filter((f) => f !== 'project' && !f.endsWith('.tgz'))).toEqual([]);
}, 180_000);
