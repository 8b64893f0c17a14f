/**
 * An open transaction on one connection never deadlocks the app's other connections: while a
 * client's transaction holds the sandbox's one upstream connection but has nothing in flight,
 * another client's autocommit statement runs inside it (in a guard of its own) instead of
 * waiting, and the holder continues afterwards. What differs from a real server is reported.
 */
import pg from 'pg';
import postgres from 'postgres';
import { closeFile, openFile, runTest, type TestServer } from '../helpers/server';
import type { Sandbox } from '../../src/proxy/sandbox';

let server: TestServer;
let sb: Sandbox;

// A lock wait far longer than the test: if anything waited for the holder, the test would time out.
beforeAll(async () => {
  ({ server, sb } = await openFile(`
    CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
    INSERT INTO items (name) VALUES ('seed');
  `, { lockWaitMs: 60_000 }));
});

afterAll(() => closeFile(server, sb));

const inTest = (name: string, fn: () => Promise<unknown>) => runTest(sb, name, fn);
const count = async (c: pg.Pool | pg.Client, name: string) => (await c.query('SELECT count(*)::int AS n FROM items WHERE name = $1', [name])).rows[0].n as number;

test('pg: a client in BEGIN awaits a read made through a second pool connection (simple and extended protocol)', async () => {
  const pool = new pg.Pool({ connectionString: sb.info.url, max: 4 });
  const problems = await inTest('interleaved read', async () => {
    const holder = await pool.connect();
    await holder.query('BEGIN');
    await holder.query("INSERT INTO items (name) VALUES ('in tx')");
    // The forgotten transaction handle: these go through other pool connections.
    expect((await pool.query("SELECT count(*)::int AS n FROM items WHERE name = 'seed'")).rows[0].n).toBe(1);
    expect(await count(pool, 'seed')).toBe(1); // parameterised: Parse/Bind/Execute/Sync
    // Not isolated as on a real server: the other connection sees the uncommitted row.
    expect(await count(pool, 'in tx')).toBe(1);
    await holder.query("INSERT INTO items (name) VALUES ('in tx 2')");
    await holder.query('COMMIT');
    holder.release();
    expect(await count(pool, 'in tx 2')).toBe(1);
  });
  expect(problems).toEqual([]);
  await pool.end();
});

test('an error in the interleaved statement leaves the holder\'s transaction intact', async () => {
  const pool = new pg.Pool({ connectionString: sb.info.url, max: 4 });
  await inTest('interleaved error', async () => {
    const holder = await pool.connect();
    await holder.query('BEGIN');
    await holder.query("INSERT INTO items (name) VALUES ('kept')");
    await expect(pool.query('SELECT * FROM no_such_table')).rejects.toMatchObject({ code: '42P01' });
    await expect(pool.query("INSERT INTO items (name) VALUES ('seed')")).rejects.toMatchObject({ code: '23505' });
    // The holder's transaction is not aborted and still has its row.
    expect(await count(holder, 'kept')).toBe(1);
    await holder.query('COMMIT');
    holder.release();
    expect(await count(pool, 'kept')).toBe(1);
  });
  await pool.end();
});

test('a write made by another connection inside a transaction that then rolls back is reported, naming both', async () => {
  const pool = new pg.Pool({ connectionString: sb.info.url, max: 4, application_name: 'app' });
  const problems = await inTest('interleaved write', async () => {
    const holder = await pool.connect();
    await holder.query('BEGIN');
    await holder.query("INSERT INTO items (name) VALUES ('holder row')");
    await pool.query("INSERT INTO items (name) VALUES ('audit row')");
    await holder.query('ROLLBACK');
    holder.release();
    // On a real server the audit row would have stayed; here it went with the rollback.
    expect(await count(pool, 'audit row')).toBe(0);
  });
  expect(problems.join('\n')).toMatch(/JESTPG_INTERLEAVED_WRITE: .*rolled back its transaction.*"INSERT INTO items \(name\) VALUES \('audit row'\)" by connection app/s);
  await pool.end();
});

test('postgres.js: sql.begin awaiting a query on the pool (outside the transaction) completes', async () => {
  const sql = postgres(sb.info.url, { max: 3, onnotice: () => undefined });
  await inTest('postgres.js interleaved', async () => {
    const result = await sql.begin(async (tx) => {
      await tx`INSERT INTO items (name) VALUES ('pjs tx')`;
      const [{ n }] = await sql`SELECT count(*)::int AS n FROM items WHERE name = ${'seed'}`;
      await tx`INSERT INTO items (name) VALUES ('pjs tx 2')`;
      return n;
    });
    expect(result).toBe(1);
    const [{ n }] = await sql`SELECT count(*)::int AS n FROM items WHERE name LIKE 'pjs tx%'`;
    expect(n).toBe(2);
  });
  await sql.end();
});

test('a client waiting to start its own transaction still waits for the holder (a real lock)', async () => {
  const pool = new pg.Pool({ connectionString: sb.info.url, max: 4 });
  await inTest('two transactions', async () => {
    const a = await pool.connect();
    const b = await pool.connect();
    await a.query('BEGIN');
    await a.query("INSERT INTO items (name) VALUES ('a first')");
    let bDone = false;
    const bTx = (async () => {
      await b.query('BEGIN');
      await b.query("INSERT INTO items (name) VALUES ('b second')");
      await b.query('COMMIT');
      bDone = true;
    })();
    // b's BEGIN waits: nesting its transaction inside a's would tie their outcomes together.
    expect(await count(a, 'a first')).toBe(1);
    expect(bDone).toBe(false);
    await a.query('COMMIT');
    await bTx;
    a.release();
    b.release();
    expect(await count(pool, 'b second')).toBe(1);
  });
  await pool.end();
});

test('connections that ran the same setup SETs (an ORM pool) still interleave: a new connection set up while another holds a transaction', async () => {
  const setup = "SET client_min_messages TO warning;SET TIME ZONE INTERVAL '+00:00' HOUR TO MINUTE";
  await inTest('pool setup inside a transaction', async () => {
    const holder = new pg.Client({ connectionString: sb.info.url, application_name: 'orm' });
    await holder.connect();
    await holder.query(setup);
    await holder.query('BEGIN');
    await holder.query("INSERT INTO items (name) VALUES ('orm tx')");
    const other = new pg.Client({ connectionString: sb.info.url, application_name: 'orm' });
    await other.connect();
    await other.query(setup); // Sequelize's setup of a connection the pool opens mid-transaction
    expect((await other.query("SELECT count(*)::int AS n FROM items WHERE name = 'seed'")).rows[0].n).toBe(1);
    await holder.query('COMMIT');
    expect((await other.query("SELECT count(*)::int AS n FROM items WHERE name = 'orm tx'")).rows[0].n).toBe(1);
    await Promise.all([holder.end(), other.end()]);
  });
});
