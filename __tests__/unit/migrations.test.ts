import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { hashMigrations, resolveSource, sqlError } from '../../src/schema/migrations';
import { lockKeyFor, templateNameFor } from '../../src/schema/template';
import { leaseKey, marker, parseMarker, templateName, workerDbName } from '../../src/util/names';

let tmp: string;
const write = (rel: string, text: string) => {
  const p = path.join(tmp, rel);
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, text);
  return p;
};
beforeEach(() => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'jestpg-unit-mig-'));
});
afterEach(() => rmSync(tmp, { recursive: true, force: true }));

describe('hashMigrations', () => {
  test('stable for the same contents, wherever the directory is', async () => {
    write('a/m/001.sql', 'CREATE TABLE a (id int);');
    write('b/m/001.sql', 'CREATE TABLE a (id int);');
    const h1 = await hashMigrations('m', undefined, { rootDir: path.join(tmp, 'a') });
    const h2 = await hashMigrations(path.join(tmp, 'b', 'm'), undefined);
    expect(h1).toMatch(/^[0-9a-f]{64}$/);
    expect(h2).toBe(h1);
  });

  test('changes with a file content, a file name, a new file and the seed', async () => {
    write('m/001.sql', 'CREATE TABLE a (id int);');
    const base = await hashMigrations(path.join(tmp, 'm'), undefined);
    write('m/001.sql', 'CREATE TABLE a (id bigint);');
    const changed = await hashMigrations(path.join(tmp, 'm'), undefined);
    expect(changed).not.toBe(base);
    write('m/002.sql', '');
    const added = await hashMigrations(path.join(tmp, 'm'), undefined);
    expect(added).not.toBe(changed);
    write('seed.sql', 'INSERT INTO a VALUES (1);');
    expect(await hashMigrations(path.join(tmp, 'm'), path.join(tmp, 'seed.sql'))).not.toBe(added);
    expect(await hashMigrations({ command: 'make migrate' }, undefined)).not.toBe(await hashMigrations({ command: 'make migrate2' }, undefined));
    expect(await hashMigrations(undefined, undefined)).toBe(await hashMigrations(undefined, undefined));
  });

  test('*.down.sql is ignored; nested Prisma-style dirs are applied in path order', async () => {
    write('m/2_b.sql', 'b');
    write('m/1_a.sql', 'a');
    write('m/1_a.down.sql', 'drop');
    write('m/3_c/migration.sql', 'c');
    const r = await resolveSource(path.join(tmp, 'm'));
    expect(r.kind === 'sql' && r.files.map((f) => path.relative(path.join(tmp, 'm'), f))).toEqual(['1_a.sql', '2_b.sql', path.join('3_c', 'migration.sql')]);
    const h = await hashMigrations(path.join(tmp, 'm'), undefined);
    write('m/1_a.down.sql', 'drop something else');
    expect(await hashMigrations(path.join(tmp, 'm'), undefined)).toBe(h);
  });

  test('a module is hashed by its contents', async () => {
    write('migrate.js', 'module.exports = async () => {}');
    const h = await hashMigrations(path.join(tmp, 'migrate.js'), undefined);
    write('migrate.js', 'module.exports = async (url) => { console.log(url) }');
    expect(await hashMigrations(path.join(tmp, 'migrate.js'), undefined)).not.toBe(h);
  });

  test('a missing path is JESTPG_MIGRATIONS_NOT_FOUND naming it', async () => {
    await expect(hashMigrations(path.join(tmp, 'nope'), undefined)).rejects.toMatchObject({
      code: 'JESTPG_MIGRATIONS_NOT_FOUND',
      message: expect.stringContaining(path.join(tmp, 'nope')),
    });
  });
});

test('sqlError maps Postgres position to file:line:col and shows the line', () => {
  const text = 'CREATE TABLE a (id int);\n\nSELECT * FROM\n  no_such_table;\n';
  const pos = text.indexOf('no_such_table') + 1;
  const e = sqlError({ message: 'relation "no_such_table" does not exist', position: String(pos), code: '42P01' }, text, 'migrations/002.sql');
  expect(e.code).toBe('JESTPG_MIGRATION_FAILED');
  expect(e.message).toContain('migrations/002.sql:4:3');
  expect(e.message).toContain('relation "no_such_table" does not exist');
  expect(e.message).toContain('42P01');
  expect(e.message).toContain('  no_such_table;\n      ^');
});

describe('naming (independent of options)', () => {
  test('template name: prefix + hash, deterministic, changes with the server major', async () => {
    write('m/001.sql', 'CREATE TABLE a (id int);');
    const opts = { prefix: 'jestpg', migrations: path.join(tmp, 'm'), versionNum: 180004 };
    const a = await templateNameFor(opts);
    expect(a).toMatch(/^jestpg_tpl_[0-9a-f]{16}$/);
    expect(await templateNameFor(opts)).toBe(a);
    expect(await templateNameFor({ ...opts, versionNum: 180009 })).toBe(a); // minor release: same
    expect(await templateNameFor({ ...opts, versionNum: 170002 })).not.toBe(a);
  });

  test('lock keys are signed 64-bit integers, stable per name', () => {
    const k = lockKeyFor('jestpg_tpl_abc');
    expect(BigInt(k)).toBeGreaterThanOrEqual(-(2n ** 63n));
    expect(BigInt(k)).toBeLessThan(2n ** 63n);
    expect(lockKeyFor('jestpg_tpl_abc')).toBe(k);
    expect(lockKeyFor('jestpg_tpl_abd')).not.toBe(k);
  });

  test('worker db names, markers and lease keys', () => {
    expect(workerDbName('jestpg', 'deadbeef', '3')).toBe('jestpg_deadbeef_w3');
    expect(templateName('jestpg', 'f'.repeat(64))).toBe('jestpg_tpl_ffffffffffffffff');
    expect(parseMarker(marker('deadbeef'))).toEqual({ runId: 'deadbeef' });
    expect(parseMarker(marker('template'))).toEqual({ template: true });
    expect(parseMarker('my own database')).toBeUndefined();
    const [ns, key] = leaseKey('ffffffff');
    expect(Number.isInteger(ns) && Number.isInteger(key) && key >= -(2 ** 31) && key < 2 ** 31).toBe(true);
  });
});

describe('what keys a template built by a command or a module', () => {
  const fsx = require('node:fs') as typeof import('node:fs');
  const osx = require('node:os') as typeof import('node:os');
  const px = require('node:path') as typeof import('node:path');
  const { hashMigrations: hash } = require('../../src/schema/migrations') as typeof import('../../src/schema/migrations');
  let root: string;
  beforeEach(() => {
    root = fsx.mkdtempSync(px.join(osx.tmpdir(), 'hash-test-'));
  });
  afterEach(() => fsx.rmSync(root, { recursive: true, force: true }));

  test('a command: its string and the files of its inputs (default: conventional folders)', async () => {
    fsx.mkdirSync(px.join(root, 'migrations'));
    fsx.writeFileSync(px.join(root, 'migrations', '001.js'), 'exports.up = 1');
    const a = await hash({ command: 'npx knex migrate:latest' }, undefined, { rootDir: root });
    fsx.writeFileSync(px.join(root, 'migrations', '002.js'), 'exports.up = 2');
    const b = await hash({ command: 'npx knex migrate:latest' }, undefined, { rootDir: root });
    expect(b).not.toBe(a);
    fsx.mkdirSync(px.join(root, 'custom'));
    fsx.writeFileSync(px.join(root, 'custom', 'x.sql'), 'select 1');
    const c = await hash({ command: 'x', inputs: ['custom'] }, undefined, { rootDir: root });
    fsx.writeFileSync(px.join(root, 'migrations', '003.js'), 'not an input now');
    expect(await hash({ command: 'x', inputs: ['custom'] }, undefined, { rootDir: root })).toBe(c);
    fsx.writeFileSync(px.join(root, 'custom', 'x.sql'), 'select 2');
    expect(await hash({ command: 'x', inputs: ['custom'] }, undefined, { rootDir: root })).not.toBe(c);
  });

  test('a module: the files beside it', async () => {
    fsx.writeFileSync(px.join(root, 'migrate.js'), 'module.exports = async () => {}');
    fsx.writeFileSync(px.join(root, '001.js'), 'a');
    const a = await hash(px.join(root, 'migrate.js'), undefined, { rootDir: root });
    fsx.writeFileSync(px.join(root, '001.js'), 'b');
    expect(await hash(px.join(root, 'migrate.js'), undefined, { rootDir: root })).not.toBe(a);
  });
});
