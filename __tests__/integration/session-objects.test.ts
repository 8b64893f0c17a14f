/**
 * Session-scoped objects belong to the client that made them (issue 12): temporary tables,
 * sequences and views, SQL-level PREPAREd statements and session SETs are that client's, and are
 * undone when it disconnects, as on a real server, although every client shares one upstream session.
 */
import pg from 'pg';
import postgres from 'postgres';
import { closeFile, connectClient, openFile, runTest, type TestServer } from '../helpers/server';
import type { Sandbox } from '../../src/proxy/sandbox';

let server: TestServer;
let sb: Sandbox;

beforeAll(async () => {
  ({ server, sb } = await openFile(`CREATE TABLE base (id int PRIMARY KEY);`, { lockWaitMs: 5000 }));
});

afterAll(() => closeFile(server, sb));

const inTest = (name: string, fn: () => Promise<unknown>) => runTest(sb, name, fn);

const connect = (applicationName = 'same') => connectClient(sb.info.url, { application_name: applicationName });

const exists = async (c: pg.Client, rel: string) => (await c.query('SELECT to_regclass($1) IS NOT NULL AS e', [rel])).rows[0].e as boolean;

test('two clients each create TEMP TABLE person in turn: the first one\'s goes when it disconnects', async () => {
  await inTest('in turn', async () => {
    for (const round of [1, 2, 3]) {
      const c = await connect();
      await c.query('CREATE TEMP TABLE person (id serial PRIMARY KEY, name text)');
      await c.query('INSERT INTO person (name) VALUES ($1)', [`round ${round}`]);
      expect((await c.query('SELECT count(*)::int AS n FROM person')).rows[0].n).toBe(1);
      await c.end();
    }
    // postgres.js too (extended protocol, its own connection handling).
    for (const round of [1, 2]) {
      const sql = postgres(sb.info.url, { max: 1, onnotice: () => undefined });
      await sql`create temp table person (id int)`;
      await sql`insert into person values (${round})`;
      expect((await sql`select count(*)::int as n from person`)[0].n).toBe(1);
      await sql.end();
    }
  });
});

test('a temp table is gone after its client disconnects while another client\'s stays', async () => {
  const a = await connect('a');
  const b = await connect('b');
  await inTest('one goes, one stays', async () => {
    await a.query('CREATE TEMP TABLE mine_a (x int)');
    await a.query('CREATE TEMPORARY SEQUENCE seq_a');
    await a.query('CREATE TEMP VIEW view_a AS SELECT 1 AS one');
    await a.query('SELECT 1 AS x INTO TEMP selected_a');
    await a.query('CREATE TABLE pg_temp.qualified_a (x int)');
    await a.query('CREATE VIEW implicit_a AS SELECT * FROM mine_a'); // temporary because mine_a is
    await b.query('CREATE TEMP TABLE mine_b (x int)');
    // What stays shared: the temp schema is one (the upstream's session), so b sees a's objects while a is connected.
    expect(await exists(b, 'mine_a')).toBe(true);
    await a.end();
    for (const rel of ['mine_a', 'seq_a', 'view_a', 'selected_a', 'qualified_a', 'implicit_a']) expect(await exists(b, rel)).toBe(false);
    expect(await exists(b, 'mine_b')).toBe(true);
    expect(await exists(b, 'base')).toBe(true);
    // DISCARD TEMP drops this client's temporary objects only.
    const c = await connect('c');
    await c.query('CREATE TEMP TABLE mine_c (x int)');
    await b.query('DISCARD TEMP');
    expect(await exists(c, 'mine_b')).toBe(false);
    expect(await exists(c, 'mine_c')).toBe(true);
    await c.end();
  });
  await b.end();
});

test('SQL-level PREPARE/EXECUTE/DEALLOCATE are per client; a client\'s statements go when it disconnects', async () => {
  const a = await connect('a');
  const b = await connect('b');
  await inTest('prepare', async () => {
    await a.query('PREPARE q (int) AS SELECT $1 + 1 AS r');
    await b.query('PREPARE Q (int) AS SELECT $1 + 2 AS r'); // same name, folded: no clash
    expect((await a.query('EXECUTE q(1)')).rows[0].r).toBe(2);
    expect((await b.query('execute "q" (1)')).rows[0].r).toBe(3);
    expect((await a.query('EXPLAIN EXECUTE q(1)')).rows.length).toBeGreaterThan(0);
    await a.query('CREATE TEMP TABLE from_exec AS EXECUTE q(41)');
    expect((await a.query('SELECT r FROM from_exec')).rows[0].r).toBe(42);
    await a.query('DEALLOCATE q');
    await expect(a.query('EXECUTE q(1)')).rejects.toMatchObject({ code: '26000' });
    expect((await b.query('EXECUTE q(1)')).rows[0].r).toBe(3);
    await b.query('PREPARE other AS SELECT 1');
    const before = (await a.query('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows[0].n as number;
    await b.end();
    expect((await a.query('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows[0].n).toBe(before - 2);
    await a.query('PREPARE q AS SELECT 5 AS r');
    await a.query('DEALLOCATE ALL');
    await expect(a.query('EXECUTE q')).rejects.toMatchObject({ code: '26000' });
  });
  await a.end();
});

test('session SETs belong to the client that made them, also between clients with the same startup parameters', async () => {
  const a = await connect();
  const b = await connect();
  // What stays shared: a custom setting another client defined exists in the one upstream
  // session, so it reads '' where a fresh backend would read NULL.
  const show = async (c: pg.Client) =>
    (await c.query(`SELECT current_setting('statement_timeout') AS t, coalesce(current_setting('app.user', true), '') AS u, current_setting('search_path') AS p`)).rows[0];
  let plain: unknown;
  await inTest('sets', async () => {
    plain = await show(b);
    await a.query("SET statement_timeout = '1234ms'");
    await a.query("SELECT set_config('app.user', 'alice', false)");
    await a.query('SET search_path = pg_catalog, public');
    const mine = { t: '1234ms', u: 'alice', p: 'pg_catalog, public' };
    expect(await show(a)).toEqual(mine);
    expect(await show(b)).toEqual(plain);
    expect(await show(a)).toEqual(mine);
    // A SET in a transaction the client rolls back is undone, one it commits is kept.
    await a.query('BEGIN');
    await a.query("SET statement_timeout = '99ms'");
    await a.query('ROLLBACK');
    expect((await show(a)).t).toBe('1234ms');
    await a.query('BEGIN');
    await a.query("SET app.\"user\" = 'bob'");
    await a.query('COMMIT');
    expect(await show(b)).toEqual(plain);
    expect((await show(a)).u).toBe('bob');
  });
  // Made during a test, kept after it, as on a real server (the test's rollback is the sandbox's).
  await inTest('after', async () => {
    expect((await show(a)).t).toBe('1234ms');
    await a.query('RESET ALL');
    expect((await show(a)).t).toBe('0');
    await a.query("SET statement_timeout = '555ms'");
    await a.query('DISCARD ALL');
    expect((await show(a)).t).toBe('0');
    await a.query("SET statement_timeout = '777ms'");
    await a.end();
    const c = await connect();
    expect(await show(c)).toEqual(plain);
    await c.end();
  });
  await b.end();
});
