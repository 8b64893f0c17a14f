import pg from 'pg';
import postgres from 'postgres';
import { closeFile, openFile, runTest, type TestServer } from '../helpers/server';
import type { Sandbox } from '../../src/proxy/sandbox';

let server: TestServer;
let sb: Sandbox;

beforeAll(async () => {
  ({ server, sb } = await openFile(`
    CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
    INSERT INTO items (name) VALUES ('seed');
    CREATE SEQUENCE big_ids START 9007199254740993;
  `));
});

afterAll(() => closeFile(server, sb));

const inTest = (name: string, fn: () => Promise<unknown>) => runTest(sb, name, fn);

const names = async (c: pg.Client | pg.Pool) => (await c.query('SELECT name FROM items ORDER BY name')).rows.map((r) => r.name);

test('pg: simple and parameterised queries go through, and a test\'s writes are rolled back', async () => {
  const client = new pg.Client({ connectionString: sb.info.url });
  await client.connect();
  const problems = await inTest('writes', async () => {
    await client.query('INSERT INTO items (name) VALUES ($1)', ['a']);
    await client.query("INSERT INTO items (name) VALUES ('b')");
    expect(await names(client)).toEqual(['a', 'b', 'seed']);
  });
  expect(problems).toEqual([]);
  await inTest('reads', async () => {
    expect(await names(client)).toEqual(['seed']);
  });
  await client.end();
  // Nothing ever reached the database itself.
  expect((await server.direct('SELECT count(*)::int AS n FROM items'))[0].n).toBe(1);
});

test('an error outside a client transaction does not poison the file transaction', async () => {
  const client = new pg.Client({ connectionString: sb.info.url });
  await client.connect();
  await inTest('errors', async () => {
    await client.query("INSERT INTO items (name) VALUES ('kept')");
    await expect(client.query("INSERT INTO items (name) VALUES ('kept')")).rejects.toMatchObject({ code: '23505' });
    await expect(client.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    // Error positions point into the client's own query text, as from a direct connection.
    await expect(client.query('SELECT nope FROM items')).rejects.toMatchObject({ code: '42703', position: '8' });
    await expect(client.query('SELECT $1::int', ['x'])).rejects.toMatchObject({ code: '22P02' });
    expect(await names(client)).toEqual(['kept', 'seed']);
  });
  await client.end();
});

test('client transactions map onto savepoints: commit keeps, rollback discards, commit after error rolls back', async () => {
  const client = new pg.Client({ connectionString: sb.info.url });
  await client.connect();
  await inTest('transactions', async () => {
    await client.query('BEGIN');
    await client.query("INSERT INTO items (name) VALUES ('committed')");
    expect((await client.query('COMMIT')).command).toBe('COMMIT');
    await client.query('BEGIN');
    await client.query("INSERT INTO items (name) VALUES ('rolled back')");
    expect((await client.query('ROLLBACK')).command).toBe('ROLLBACK');
    await client.query('BEGIN');
    await client.query("INSERT INTO items (name) VALUES ('failed')");
    await expect(client.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012' });
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    expect((await client.query('COMMIT')).command).toBe('ROLLBACK');
    // Multi-statement strings with transaction control.
    await client.query("BEGIN; INSERT INTO items (name) VALUES ('multi'); COMMIT");
    expect(await names(client)).toEqual(['committed', 'multi', 'seed']);
    // Nested savepoints of the client pass through.
    await client.query('BEGIN');
    await client.query('SAVEPOINT sp');
    await client.query("INSERT INTO items (name) VALUES ('inner')");
    await client.query('ROLLBACK TO SAVEPOINT sp');
    await client.query('COMMIT');
    expect(await names(client)).toEqual(['committed', 'multi', 'seed']);
  });
  await client.end();
});

test('postgres.js: prepared statements, pipelining, transactions, two connections with the same statement names', async () => {
  const sql = postgres(sb.info.url, { max: 2, onnotice: () => undefined });
  await inTest('postgres.js', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => sql`SELECT ${i}::int AS i`));
    expect(results.map((r) => r[0].i)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    await sql.begin(async (tx) => {
      await tx`INSERT INTO items (name) VALUES (${'pjs'})`;
      await tx`INSERT INTO items (name) VALUES (${'pjs2'})`;
    });
    await expect(
      sql.begin(async (tx) => {
        await tx`INSERT INTO items (name) VALUES (${'gone'})`;
        await tx`INSERT INTO items (name) VALUES (${'pjs'})`;
      }),
    ).rejects.toMatchObject({ code: '23505' });
    const rows = await sql`SELECT name FROM items ORDER BY name`;
    expect(rows.map((r) => r.name)).toEqual(['pjs', 'pjs2', 'seed']);
  });
  await sql.end();
});

test('a client waiting for a transaction held by another gets an error naming the holder', async () => {
  const a = new pg.Client({ connectionString: sb.info.url, application_name: 'holder-app' });
  const b = new pg.Client({ connectionString: sb.info.url });
  await a.connect();
  await b.connect();
  const problems = await inTest('lock wait', async () => {
    await a.query('BEGIN');
    await a.query('SELECT 1');
    // Idle inside its transaction, the holder lends the connection: no wait.
    expect((await b.query('SELECT 2 AS x')).rows[0].x).toBe(2);
    // Busy in a long statement, it does not: the waiter fails after lockWaitMs, naming it.
    const busy = a.query('SELECT pg_sleep(1.5)').catch((e: Error) => e);
    const err = await b.query('SELECT 3').catch((e: Error) => e);
    expect(String(err)).toMatch(/JESTPG_LOCK_WAIT.*holder-app.*pg_sleep/s);
    await busy;
  });
  expect(problems.join('\n')).toMatch(/JESTPG_LEAKED_CONNECTION.*holder-app/s);
  // The leaked transaction was rolled back; the client learns it on its next statement.
  await inTest('after leak', async () => {
    await expect(a.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    await a.query('ROLLBACK');
    expect((await a.query('SELECT 3 AS x')).rows[0].x).toBe(3);
    expect((await b.query('SELECT 4 AS x')).rows[0].x).toBe(4);
  });
  await a.end();
  await b.end();
});

test('a query still running when its test ends is cancelled and reported; one arriving between tests runs and is rolled back', async () => {
  const pool = new pg.Pool({ connectionString: sb.info.url });
  let pending: Promise<unknown> | undefined;
  const problems = await inTest('slow', async () => {
    await pool.query('SELECT 1');
    pending = pool.query('SELECT pg_sleep(5)').catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 50)); // surely running now
  });
  expect(problems.join('\n')).toMatch(/JESTPG_LATE_QUERY.*slow.*pg_sleep/s);
  expect(String(await pending)).toMatch(/cancel/i);
  // Sent by the test but still on its way when the test ended: it runs inside the test's
  // savepoint, finishes within graceMs, and is reported as the test's un-awaited work.
  const warm = new pg.Client({ connectionString: sb.info.url });
  await warm.connect();
  const again = await inTest('fire and forget', async () => {
    pending = warm.query('SELECT 7 AS x FROM pg_sleep(0.03)');
  });
  expect(((await pending) as pg.QueryResult).rows[0].x).toBe(7);
  expect(again.join('\n')).toMatch(/JESTPG_LATE_QUERY.*"fire and forget".*SELECT 7.*finished within graceMs/s);
  await warm.end();
  // Between tests: it runs as on a real server, in a savepoint of its own that is rolled back
  // before the next test's first statement, and is reported on the test that ended last.
  expect((await pool.query("INSERT INTO items (name) VALUES ('between tests') RETURNING 42 AS x")).rows[0].x).toBe(42);
  await inTest('next', async () => {
    expect((await pool.query("SELECT count(*)::int AS n FROM items WHERE name = 'between tests'")).rows[0].n).toBe(0);
  });
  await pool.end();
});

test('statements that cannot run in a transaction get a clear error', async () => {
  const client = new pg.Client({ connectionString: sb.info.url });
  await client.connect();
  await inTest('non-tx', async () => {
    await expect(client.query('CREATE DATABASE nope')).rejects.toThrow(/JESTPG_UNSUPPORTED_STATEMENT.*CREATE DATABASE/);
    await expect(client.query('VACUUM items')).rejects.toThrow(/VACUUM/);
    expect((await client.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    // Inside a client transaction the refusal aborts it, as an error would in Postgres.
    await client.query('BEGIN');
    await client.query("INSERT INTO items (name) VALUES ('in-aborted-tx')");
    await expect(client.query('CREATE DATABASE nope')).rejects.toThrow(/JESTPG_UNSUPPORTED_STATEMENT/);
    await expect(client.query('SELECT 1')).rejects.toMatchObject({ code: '25P02' });
    expect((await client.query('COMMIT')).command).toBe('ROLLBACK');
    expect((await client.query("SELECT count(*)::int AS n FROM items WHERE name = 'in-aborted-tx'")).rows[0].n).toBe(0);
    // SET LOCAL outside a transaction warns and does nothing, as in Postgres.
    await client.query("SET LOCAL statement_timeout = '1234ms'");
    expect((await client.query("SELECT current_setting('statement_timeout') AS st")).rows[0].st).toBe('0');
  });
  await client.end();
});

test('sequences a test advanced are put back, so ids do not depend on which tests ran before', async () => {
  const client = new pg.Client({ connectionString: sb.info.url });
  await client.connect();
  const ids: number[] = [];
  for (const name of ['seq 1', 'seq 2', 'seq 3']) {
    await inTest(name, async () => {
      ids.push((await client.query("INSERT INTO items (name) VALUES ('x') RETURNING id")).rows[0].id);
      await client.query("INSERT INTO items (name) VALUES ('y')");
    });
  }
  expect(new Set(ids).size).toBe(1);
  await client.end();
});

test('a query sent while a leaked transaction sits idle runs inside it; the leak is reported and the next test does not wait', async () => {
  const a = new pg.Client({ connectionString: sb.info.url, application_name: 'leaky' });
  const b = new pg.Client({ connectionString: sb.info.url, application_name: 'queued' });
  const c = new pg.Client({ connectionString: sb.info.url });
  await Promise.all([a.connect(), b.connect(), c.connect()]);
  let queued: Promise<unknown> | undefined;
  const problems = await inTest('leak with a queue', async () => {
    await a.query('BEGIN');
    queued = b.query('SELECT 123').catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 20));
  });
  expect(problems.join('\n')).toMatch(/JESTPG_LEAKED_CONNECTION.*leaky/s);
  // The idle transaction lent the connection: the other client's query ran at once.
  expect(((await queued) as pg.QueryResult).rows[0]['?column?']).toBe(123);
  // Were the upstream still held, these would fail with JESTPG_LOCK_WAIT.
  await inTest('next', async () => {
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    expect((await b.query('SELECT 2 AS two')).rows[0].two).toBe(2);
  });
  await a.query('ROLLBACK').catch(() => undefined);
  await Promise.all([a.end(), b.end(), c.end()]);
});

test('a sequence past 2^53 is put back exactly at the end of each test (its value restored as text)', async () => {
  const c = new pg.Client({ connectionString: sb.info.url });
  await c.connect();
  const next = async () => (await c.query("SELECT nextval('big_ids')::text AS v")).rows[0].v as string;
  await inTest('advances big_ids', async () => {
    expect(await next()).toBe('9007199254740993');
    expect(await next()).toBe('9007199254740994');
  });
  await inTest('starts where the database has it', async () => {
    expect(await next()).toBe('9007199254740993');
  });
  await c.end();
});
