import { closest, defaults, fileOverrides, validate } from '../../src/util/options';

function thrown(fn: () => unknown): { code: string; message: string; problems: unknown[] } {
  try {
    fn();
  } catch (e) {
    return e as { code: string; message: string; problems: unknown[] };
  }
  throw new Error('expected a throw');
}

test('defaults', () => {
  expect(validate(undefined)).toEqual(defaults);
  expect(validate({ isolation: 'file' }).isolation).toBe('file');
});

test('an unknown key names itself and the accepted keys', () => {
  expect(() => validate({ isolaton: 'file' })).toThrow(/"pg.isolaton".*Accepted keys: server, binDir, migrations/s);
  try {
    validate({ isolaton: 'file' });
  } catch (e) {
    expect((e as { code: string }).code).toBe('JESTPG_OPTION_UNKNOWN');
  }
});

test('a wrong type names the key, the accepted values and what was given', () => {
  expect(() => validate({ isolation: 'suite' })).toThrow(/"pg.isolation" must be "test" or "file", but got the string "suite"/);
  expect(() => validate({ graceMs: -1 })).toThrow(/graceMs/);
  expect(() => validate({ exposeAs: 'X' })).toThrow(/exposeAs.*array/);
  expect(() => validate({ migrations: { cmd: 'x' } })).toThrow(/migrations/);
  expect(() => validate({ prefix: 'Bad-Prefix' })).toThrow(/prefix/);
});

test('per-file overrides merge per key, from the JSON docblock and from short pragmas', () => {
  expect(fileOverrides({ 'jest-environment-options': '{"pg": {"isolation": "file"}}' })).toEqual({ isolation: 'file' });
  expect(fileOverrides({ 'pg-isolation': 'file', 'pg-grace-ms': '50', 'pg-expose-as': 'A, B' })).toEqual({ isolation: 'file', graceMs: 50, exposeAs: ['A', 'B'] });
  const base = validate({ migrations: './m', isolation: 'test' });
  const merged = validate(fileOverrides({ 'pg-isolation': 'file' }), base);
  expect(merged).toMatchObject({ migrations: './m', isolation: 'file' });
});

test('a file may not change what shapes the whole run', () => {
  expect(() => fileOverrides({ 'jest-environment-options': '{"pg": {"migrations": "./other"}}' })).toThrow(/migrations.*jest config/);
});

test('every problem is reported at once: unknown keys with a "did you mean", bad values with the accepted ones', () => {
  const e = thrown(() => validate({ migrationz: './m', isolation: 'sometimes' }));
  expect(e.code).toBe('JESTPG_OPTION_UNKNOWN');
  expect(e.problems).toHaveLength(2);
  expect(e.message).toMatch(/^2 problems in testEnvironmentOptions\.pg/);
  expect(e.message).toContain('- "pg.migrationz" is not an option: did you mean "pg.migrations"?');
  expect(e.message).toContain('- "pg.isolation" must be "test" or "file", but got the string "sometimes".');
  expect(e.message).toMatch(/Accepted keys: server, binDir, migrations, seed, isolation, exposeAs, leaks, lateQueries, graceMs, lockWaitMs, resetSequences, keepDatabases, cacheDir, prefix, keepTemplates, globalSetup, globalTeardown, time\./);
});

test('bad values alone are JESTPG_OPTION_TYPE, one line each, in the order given', () => {
  const e = thrown(() => validate({ graceMs: -1, leaks: 'wran', resetSequences: 'yes', prefix: 'Bad-Prefix' }));
  expect(e.code).toBe('JESTPG_OPTION_TYPE');
  const lines = e.message.split('\n').filter((l) => l.startsWith('  - '));
  expect(lines).toEqual([
    '  - "pg.graceMs" must be a non-negative number of milliseconds, but got number -1.',
    '  - "pg.leaks" must be "error" or "warn", but got the string "wran" (did you mean "warn"?).',
    '  - "pg.resetSequences" must be true or false, but got the string "yes".',
    '  - "pg.prefix" must be lowercase letters and digits, starting with a letter, at most 16 characters, but got the string "Bad-Prefix".',
  ]);
});

test('an unknown key with nothing close gets no guess; several unknown keys are all named', () => {
  const e = thrown(() => validate({ database: 'x', Isolation: 'file', grace_ms: 5, lockwaitms: 1 }));
  expect(e.code).toBe('JESTPG_OPTION_UNKNOWN');
  expect(e.message).toContain('- "pg.database" is not an option.');
  expect(e.message).toContain('- "pg.Isolation" is not an option: did you mean "pg.isolation"?');
  expect(e.message).toContain('- "pg.grace_ms" is not an option: did you mean "pg.graceMs"?');
  expect(e.message).toContain('- "pg.lockwaitms" is not an option: did you mean "pg.lockWaitMs"?');
  expect(e.problems).toHaveLength(4);
});

test('keys inherited from Object.prototype are unknown keys, not crashes', () => {
  const e = thrown(() => validate(JSON.parse('{"constructor": 1, "toString": "x"}')));
  expect(e.code).toBe('JESTPG_OPTION_UNKNOWN');
  expect(e.problems).toHaveLength(2);
});

test('closest: typos, case, separators and transpositions; nothing when far', () => {
  expect(closest('migratoins', ['migrations', 'seed'])).toBe('migrations');
  expect(closest('expose-as', ['exposeAs'])).toBe('exposeAs');
  expect(closest('fiel', ['test', 'file'])).toBe('file');
  expect(closest('sometimes', ['test', 'file'])).toBeUndefined();
  expect(closest('', ['test'])).toBeUndefined();
});

test('a file setting several run-wide keys hears about all of them', () => {
  const e = thrown(() => fileOverrides({ 'jest-environment-options': '{"pg": {"migrations": "./other", "prefix": "x", "isolation": "file"}}' }));
  expect(e.code).toBe('JESTPG_OPTION_TYPE');
  expect(e.message).toContain('- "pg.migrations" shapes the whole run, so it must be set in the jest config, not per file.');
  expect(e.message).toContain('- "pg.prefix" shapes the whole run, so it must be set in the jest config, not per file.');
  expect(e.message).not.toContain('pg.isolation');
});

test('not an object at all', () => {
  const e = thrown(() => validate('file'));
  expect(e.code).toBe('JESTPG_OPTION_TYPE');
  expect(e.message).toContain('- "pg" must be an object, but got the string "file".');
});

test('keepTemplates: a whole number, set for the whole run', () => {
  expect(validate(undefined).keepTemplates).toBe(3);
  expect(validate({ keepTemplates: 0 }).keepTemplates).toBe(0);
  expect(thrown(() => validate({ keepTemplates: 1.5 })).message).toContain('"pg.keepTemplates" must be a whole number');
  expect(thrown(() => fileOverrides({ 'pg-keep-templates': '1' })).message).toContain('"pg.keepTemplates" shapes the whole run');
});
