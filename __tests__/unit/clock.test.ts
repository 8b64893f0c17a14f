import { clockRewrite } from '../../src/util/sql-clock';

test('the clock keywords become casts of now(), with their precision', () => {
  expect(clockRewrite('SELECT CURRENT_TIMESTAMP')).toBe('SELECT (pg_catalog.now()::timestamptz)');
  expect(clockRewrite('select current_timestamp(3), localtimestamp (2)')).toBe('select (pg_catalog.now()::timestamptz(3)), (pg_catalog.now()::timestamp(2))');
  expect(clockRewrite('SELECT CURRENT_DATE - 1, CURRENT_TIME, LOCALTIME')).toBe(
    'SELECT (pg_catalog.now()::date) - 1, (pg_catalog.now()::timetz), (pg_catalog.now()::time)',
  );
});

test('quotes, dollar quotes, quoted identifiers, comments and qualified names are left alone', () => {
  const untouched = [
    "SELECT 'CURRENT_TIMESTAMP'",
    `SELECT "current_date" FROM t`,
    'SELECT $$ current_time $$',
    'SELECT $x$ localtime $x$',
    'SELECT 1 -- current_timestamp',
    'SELECT 1 /* localtimestamp /* nested */ current_date */',
    'SELECT t.localtime FROM t',
    'SELECT current_timestamps FROM t',
    "SELECT E'it\\'s current_date'",
    'SELECT now()',
  ];
  for (const sql of untouched) expect(clockRewrite(sql)).toBe(sql);
  expect(clockRewrite("SELECT 'x', CURRENT_DATE, 'y'")).toBe("SELECT 'x', (pg_catalog.now()::date), 'y'");
});
