import { setClause, shapeStatements, splitGucList } from '../../src/schema/clone';
import { marker, noteOf, parseMarker } from '../../src/util/names';

test('splitGucList reads GUC_LIST_QUOTE values as Postgres stores them', () => {
  expect(splitGucList('"$user", public')).toEqual(['$user', 'public']);
  expect(splitGucList('  a ,b,"c d" , "e""f"  ')).toEqual(['a', 'b', 'c d', 'e"f']);
  expect(splitGucList('""')).toEqual(['']);
  expect(splitGucList('')).toEqual([]);
  expect(splitGucList('"unterminated')).toBeUndefined();
  expect(splitGucList('a b')).toBeUndefined();
  expect(splitGucList('a,,b')).toBeUndefined();
});

test('setClause quotes the name and every value, lists element by element', () => {
  expect(setClause('TimeZone=UTC')).toBe(`SET "TimeZone" TO 'UTC'`);
  expect(setClause('search_path="$user", public')).toBe(`SET "search_path" TO '$user', 'public'`);
  expect(setClause('DateStyle=ISO, MDY')).toBe(`SET "DateStyle" TO 'ISO, MDY'`);
  expect(setClause("myapp.note=it's = fine")).toBe(`SET "myapp.note" TO 'it''s = fine'`);
  expect(() => setClause('=x')).toThrow(/unexpected setting/);
});

test('shapeStatements: comment after our marker, settings per role, the exact privileges', () => {
  const sql = shapeStatements(
    {
      owner: 'app',
      comment: 'jest-environment-pg template\nMain',
      acl: [
        { grantee: null, privilege: 'CONNECT', grantable: false },
        { grantee: 'app', privilege: 'CREATE', grantable: true },
      ],
      settings: [
        { role: null, config: ['timezone=UTC', 'search_path=a, "B"'] },
        { role: 'ro"le', config: ['work_mem=4MB'] },
      ],
    },
    'db_w1',
    '0123abcd',
  );
  expect(sql).toEqual([
    `COMMENT ON DATABASE "db_w1" IS 'jest-environment-pg run=0123abcd\nMain'`,
    `ALTER DATABASE "db_w1" SET "timezone" TO 'UTC'`,
    `ALTER DATABASE "db_w1" SET "search_path" TO 'a', 'B'`,
    `ALTER ROLE "ro""le" IN DATABASE "db_w1" SET "work_mem" TO '4MB'`,
    `REVOKE ALL ON DATABASE "db_w1" FROM PUBLIC, "app"`,
    `GRANT CONNECT ON DATABASE "db_w1" TO PUBLIC`,
    `GRANT CREATE ON DATABASE "db_w1" TO "app" WITH GRANT OPTION`,
  ]);
  // Default privileges and no comment: only our marker.
  expect(shapeStatements({ owner: 'x', comment: 'jest-environment-pg template', acl: null, settings: [] }, 'd', '0123abcd')).toEqual([
    `COMMENT ON DATABASE "d" IS 'jest-environment-pg run=0123abcd'`,
  ]);
  expect(() => shapeStatements({ owner: 'x', comment: null, acl: [{ grantee: null, privilege: 'ALL; DROP', grantable: false }], settings: [] }, 'd', '0123abcd')).toThrow(/unexpected database privilege/);
});

test('markers: the first line proves ownership, the rest is the user\'s comment', () => {
  expect(marker('0123abcd', 'x\ny')).toBe('jest-environment-pg run=0123abcd\nx\ny');
  expect(parseMarker('jest-environment-pg run=0123abcd\nx')).toEqual({ runId: '0123abcd' });
  expect(parseMarker('jest-environment-pg template\nx')).toEqual({ template: true });
  expect(parseMarker('x\njest-environment-pg template')).toBeUndefined();
  // A template's marker says when a run last used it.
  expect(marker('template', 'x', 1767225600.7)).toBe('jest-environment-pg template used=1767225600\nx');
  expect(parseMarker('jest-environment-pg template used=1767225600\nx')).toEqual({ template: true, usedAt: 1767225600 });
  expect(parseMarker('jest-environment-pg template used=soon')).toBeUndefined();
  expect(noteOf('jest-environment-pg template used=1\nx')).toBe('x');
  expect(noteOf('jest-environment-pg template')).toBeUndefined();
  expect(noteOf('jest-environment-pg template\nx\ny')).toBe('x\ny');
  expect(noteOf('my own comment')).toBe('my own comment');
  expect(noteOf(null)).toBeUndefined();
});
