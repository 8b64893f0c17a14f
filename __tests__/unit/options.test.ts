import { defaults, fileOverrides, validate } from '../../src/options';

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
