import { bind, sqlValue } from '../../src/proxy/admin-client';

test('values become SQL literals: NULL, numbers, booleans, quoted strings, arrays', () => {
  expect(sqlValue(null)).toBe('NULL');
  expect(sqlValue(undefined)).toBe('NULL');
  expect(sqlValue(-42)).toBe('-42');
  expect(sqlValue(12345678901234567890n)).toBe('12345678901234567890');
  expect(sqlValue(true)).toBe('TRUE');
  expect(sqlValue("it's")).toBe("'it''s'");
  expect(sqlValue('C:\\dir')).toBe("E'C:\\\\dir'");
  expect(sqlValue(['a', 'b'])).toBe("ARRAY['a', 'b']");
  expect(sqlValue([])).toBe("'{}'");
  expect(() => sqlValue(NaN)).toThrow(/not a finite number/);
  expect(() => sqlValue({})).toThrow(/cannot send a object/);
  expect(() => sqlValue('a\0b')).toThrow(/NUL/);
});

test('placeholders are replaced outside quoted strings and identifiers only', () => {
  expect(bind('SELECT $1::int, $2, $10', [1, 'x', 1, 1, 1, 1, 1, 1, 1, "'"])).toBe("SELECT 1::int, 'x', ''''");
  expect(bind(`SELECT '$1', "$2", 'it''s $1', $1`, [7])).toBe(`SELECT '$1', "$2", 'it''s $1', 7`);
  expect(bind('SELECT left(datname, length($1)) = $1', ['jestpg_'])).toBe("SELECT left(datname, length('jestpg_')) = 'jestpg_'");
  expect(() => bind('SELECT $2', [1])).toThrow(/no value for \$2/);
  expect(() => bind("SELECT 'open", [1])).toThrow(/unterminated/);
});
