import { statements } from '../../src/proxy/sql';

const kinds = (sql: string) => statements(sql).map((s) => s.kind);

test.each([
  ['BEGIN', ['begin']],
  ['begin work', ['begin']],
  ['BEGIN ISOLATION LEVEL SERIALIZABLE', ['begin']],
  ['START TRANSACTION READ ONLY', ['begin']],
  ['COMMIT', ['commit']],
  ['end', ['commit']],
  ['COMMIT AND CHAIN', ['commit']],
  ['ROLLBACK', ['rollback']],
  ['abort', ['rollback']],
  ['ROLLBACK TO SAVEPOINT a', ['rollbackTo']],
  ['ROLLBACK TO a', ['rollbackTo']],
  ['rollback work to savepoint a', ['rollbackTo']],
  ['SAVEPOINT a', ['savepoint']],
  ['RELEASE SAVEPOINT a', ['release']],
  ['COMMIT PREPARED \'x\'', ['nonTx']],
  ['PREPARE TRANSACTION \'x\'', ['nonTx']],
  ['CREATE DATABASE x', ['nonTx']],
  ['DROP DATABASE x', ['nonTx']],
  ['VACUUM', ['nonTx']],
  ['vacuum analyze t', ['nonTx']],
  ['CREATE INDEX CONCURRENTLY i ON t (a)', ['nonTx']],
  ['create unique index concurrently i on t (a)', ['nonTx']],
  ['DROP INDEX CONCURRENTLY i', ['nonTx']],
  ['REINDEX TABLE CONCURRENTLY t', ['nonTx']],
  ['ALTER SYSTEM SET work_mem = 1', ['nonTx']],
  ['CREATE INDEX i ON t (a)', ['other']],
  ['SELECT 1', ['other']],
  ['DEALLOCATE ALL', ['deallocate']],
  ['DISCARD ALL', ['discardAll']],
  ['DISCARD PLANS', ['other']],
  ['SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', ['setTransaction']],
  ['set session characteristics as transaction read only', ['setTransaction']],
  ['SET LOCAL statement_timeout = 5', ['setLocal']],
  ['SET statement_timeout = 5', ['other']],
  ['', []],
  [' ; ; -- nothing\n', []],
])('%j → %j', (sql, expected) => {
  expect(kinds(sql)).toEqual(expected);
});

test('splits statements and ignores semicolons and keywords in strings, identifiers, comments and dollar quotes', () => {
  const sql = `INSERT INTO t VALUES ('a;b', E'it\\'s;', "we;ird"); /* ; commit; /* nested; */ rollback */ SELECT $$;begin;$$, $tag$ ; commit $tag$; -- ; commit
COMMIT`;
  expect(kinds(sql)).toEqual(['other', 'other', 'commit']);
  const [a, b] = statements(sql);
  expect(sql.slice(a.start, a.end)).toBe(`INSERT INTO t VALUES ('a;b', E'it\\'s;', "we;ird")`);
  expect(sql.slice(b.start, b.end)).toBe('SELECT $$;begin;$$, $tag$ ; commit $tag$');
});

test('a DO block with BEGIN inside dollar quotes is not transaction control', () => {
  expect(kinds(`DO $$ BEGIN PERFORM 1; END $$`)).toEqual(['other']);
});

test('tags and names', () => {
  expect(statements('START TRANSACTION')[0].tag).toBe('START TRANSACTION');
  expect(statements('begin')[0].tag).toBe('BEGIN');
  expect(statements('DEALLOCATE foo')[0].name).toBe('foo');
  expect(statements('DEALLOCATE PREPARE foo')[0].name).toBe('foo');
  expect(statements('DEALLOCATE ALL')[0].name).toBeUndefined();
  expect(statements('SET LOCAL role = app_user')[0].name).toBe('role');
});

test('positional parameters and dollar signs in identifiers are not dollar quotes', () => {
  expect(kinds('SELECT $1, a$b FROM t; COMMIT')).toEqual(['other', 'commit']);
});
