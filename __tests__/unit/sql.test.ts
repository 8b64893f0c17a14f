import { lex, statements } from '../../src/proxy/sql';

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
  ['COMMIT PREPARED \'x\'', ['commitPrepared']],
  ['ROLLBACK PREPARED \'x\'', ['rollbackPrepared']],
  ['PREPARE TRANSACTION \'x\'', ['prepareTx']],
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

describe('what the sandbox rewrites per client', () => {
  const refs = (sql: string) => (lex(sql).refs ?? []).map((r) => [r.kind, sql.slice(r.start, r.end)]);

  test('virtual-backend names: calls and the relation, bare or pg_catalog-qualified, never in strings or comments', () => {
    expect(refs('SELECT pg_backend_pid()')).toEqual([['backendPid', 'pg_backend_pid()']]);
    expect(refs('select PG_CATALOG.PG_BACKEND_PID ( )')).toEqual([['backendPid', 'PG_CATALOG.PG_BACKEND_PID ( )']]);
    expect(refs("SELECT pid, (SELECT pg_terminate_backend(pid)) FROM pg_stat_activity a WHERE state = $1")).toEqual([
      ['terminate', 'pg_terminate_backend'],
      ['statActivity', 'pg_stat_activity'],
    ]);
    expect(refs('SELECT pg_catalog.pg_cancel_backend($1)')).toEqual([['cancel', 'pg_catalog.pg_cancel_backend']]);
    expect(refs("SELECT 'pg_backend_pid()', \"pg_backend_pid\"() /* pg_stat_activity */ -- pg_cancel_backend(1)\n")).toEqual([]);
    expect(refs('SELECT pg_stat_activity.pid FROM other.pg_stat_activity, myschema.pg_backend_pid()')).toEqual([]);
    expect(refs('SELECT $$ pg_backend_pid() $$')).toEqual([]);
    expect(refs('CREATE VIEW v AS SELECT pg_backend_pid()')).toEqual([]);
    const l = lex('SELECT pg_terminate_backend(1)');
    expect([l.kill, l.activity]).toEqual([true, true]);
    expect(lex('SELECT * FROM pg_stat_activity').activity).toBe(true);
    expect(lex('SELECT pg_backend_pid()').activity).toBe(false);
  });

  test('SQL-level PREPARE, EXECUTE and DEALLOCATE names, with where they are', () => {
    const at = (sql: string, r?: [number, number]) => (r ? sql.slice(r[0], r[1]) : undefined);
    let sql = 'PREPARE Foo (int) AS SELECT $1';
    let [s] = statements(sql);
    expect([s.kind, s.name, at(sql, s.nameAt)]).toEqual(['prepare', 'foo', 'Foo']);
    sql = 'prepare "Mixed" as select 1';
    [s] = statements(sql);
    expect([s.kind, s.name, at(sql, s.nameAt)]).toEqual(['prepare', 'Mixed', '"Mixed"']);
    for (const q of ['EXECUTE foo(1)', 'EXPLAIN (ANALYZE, COSTS OFF) EXECUTE foo(1)', 'CREATE TEMP TABLE t AS EXECUTE foo(1)']) {
      [s] = statements(q);
      expect([s.exec?.name, at(q, s.exec?.at)]).toEqual(['foo', 'foo']);
    }
    expect(statements('CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()')[0].exec).toBeUndefined();
    expect(statements('GRANT EXECUTE ON FUNCTION f() TO r')[0].exec).toBeUndefined();
    expect(statements('DEALLOCATE "Q"')[0].name).toBe('Q');
    expect(statements("PREPARE TRANSACTION 'it''s'")[0]).toMatchObject({ kind: 'prepareTx', gid: "it's" });
    expect(kinds('DISCARD TEMP; discard temporary')).toEqual(['discardTemp', 'discardTemp']);
  });

  test('statements that may create temporary objects or change session settings', () => {
    expect(lex('CREATE TEMP TABLE person (id int)').temp).toBe(true);
    expect(lex('create temporary sequence s').temp).toBe(true);
    expect(lex('CREATE TABLE pg_temp.x (a int)').temp).toBe(true);
    expect(lex('CREATE VIEW v AS SELECT 1').temp).toBe(true);
    expect(lex('SELECT 1 AS a INTO TEMP t').temp).toBe(true);
    expect(lex('SELECT temp FROM weather').temp).toBe(false);
    expect(lex('INSERT INTO t VALUES (1)').temp).toBe(false);
    expect(lex('SET search_path = x').sets).toBe(true);
    expect(lex('RESET ALL').sets).toBe(true);
    expect(lex("SELECT set_config('a.b', 'c', false)").sets).toBe(true);
    expect(lex('SET LOCAL a.b = 1').sets).toBe(false);
    expect(lex('SET TRANSACTION READ ONLY').sets).toBe(false);
    expect(lex('UPDATE t SET a = 1').sets).toBe(false);
    expect(statements('SHOW server_version_num')[0].show).toBe('server_version_num');
  });
});
