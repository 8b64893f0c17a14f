/**
 * Every client is a backend of its own (issue 12): pg_backend_pid(), pg_stat_activity,
 * pg_terminate_backend and pg_cancel_backend act on the client's virtual pid, never on the
 * sandbox's one connection to Postgres.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import pg from 'pg';
import postgres from 'postgres';
import { closeFile, connectClient, openFile, runTest, untilUpstreamRuns as untilRuns, type TestServer } from '../helpers/server';
import type { Sandbox } from '../../src/proxy/sandbox';

let server: TestServer;
let sb: Sandbox;

beforeAll(async () => {
  ({ server, sb } = await openFile(`CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);`, { lockWaitMs: 5000 }));
});

afterAll(() => closeFile(server, sb));

const inTest = (name: string, fn: () => Promise<unknown>) => runTest(sb, name, fn);

const connect = (applicationName: string) => connectClient(sb.info.url, { application_name: applicationName });

const pidOf = (c: pg.Client) => (c as unknown as { processID: number }).processID;

const untilUpstreamRuns = (pattern: string) => untilRuns(server, sb, pattern);

test('pg_backend_pid() is the pid of the BackendKeyData, per client, through simple and extended queries', async () => {
  const a = await connect('a');
  const b = await connect('b');
  await inTest('pids', async () => {
    expect(pidOf(a)).not.toBe(pidOf(b));
    expect((await a.query('SELECT pg_backend_pid()')).rows[0].pg_backend_pid).toBe(pidOf(a));
    expect((await b.query('select pg_catalog.pg_backend_pid() AS p, $1::int AS x', [7])).rows[0]).toEqual({ p: pidOf(b), x: 7 });
    expect((await b.query({ name: 'mine', text: 'SELECT pg_backend_pid() AS p' })).rows[0].p).toBe(pidOf(b));
    expect(pidOf(a)).not.toBe(sb.upstream!.backendPid);
    // An error after a rewritten call still points at the client's own text.
    const text = 'SELECT pg_backend_pid(), nope';
    await expect(a.query(text)).rejects.toMatchObject({ code: '42703', position: String(text.indexOf('nope') + 1) });
  });
  await a.end();
  await b.end();
});

test('pg_stat_activity shows each client as its own row, and never the sandbox connection (also while another client holds the upstream)', async () => {
  const a = await connect('row-a');
  const b = await connect('row-b');
  await inTest('activity', async () => {
    await a.query('BEGIN');
    await a.query('SELECT 1 AS in_tx');
    const rows = (
      await b.query(`SELECT pid, application_name, state, query FROM pg_stat_activity WHERE datname = current_database() ORDER BY application_name`)
    ).rows;
    expect(rows).toEqual([
      { pid: pidOf(a), application_name: 'row-a', state: 'idle in transaction', query: 'SELECT 1 AS in_tx' },
      { pid: pidOf(b), application_name: 'row-b', state: 'active', query: expect.stringContaining('FROM pg_stat_activity') },
    ]);
    await a.query('COMMIT');
    const pids = (await a.query('SELECT array_agg(pid) AS p FROM pg_catalog.pg_stat_activity')).rows[0].p as number[];
    expect(pids).not.toContain(sb.upstream!.backendPid);
  });
  await a.end();
  await b.end();
});

test('pg_terminate_backend(virtual pid) ends exactly that client with 57P01; the sandbox and its transaction carry on', async () => {
  const victim = await connect('victim');
  const killer = await connect('killer');
  await inTest('terminate', async () => {
    await killer.query("INSERT INTO notes (body) VALUES ('kept')");
    const ended = new Promise<Error>((resolve) => victim.once('error', resolve));
    expect((await killer.query('SELECT pg_terminate_backend($1)', [pidOf(victim)])).rows[0].pg_terminate_backend).toBe(true);
    const err = (await ended) as Error & { code?: string };
    expect(err.message).toBe('terminating connection due to administrator command');
    expect(err.code).toBe('57P01');
    await expect(victim.query('SELECT 1')).rejects.toThrow();
    // The upstream survived, and with it the test's work.
    expect((await killer.query("SELECT count(*)::int AS n FROM notes WHERE body = 'kept'")).rows[0].n).toBe(1);
    expect(sb.upstream!.lost).toBeUndefined();
  });
  await killer.end();
});

test('a client terminating itself gets 57P01 for that statement, as from Postgres', async () => {
  const pool = new pg.Pool({ connectionString: sb.info.url, max: 1 });
  pool.on('error', () => undefined);
  await inTest('self', async () => {
    await expect(pool.query('SELECT pg_terminate_backend(pg_backend_pid())')).rejects.toMatchObject({ code: '57P01' });
    expect((await pool.query('SELECT 1 AS one')).rows[0].one).toBe(1); // the pool reconnects
  });
  await pool.end();
});

(existsSync('/usr/bin/psql') ? test : test.skip)('psql in a child process terminates a client by the pid that client read', async () => {
  const victim = await connect('psql-victim');
  await inTest('psql', async () => {
    const pid = (await victim.query('SELECT pg_backend_pid()')).rows[0].pg_backend_pid as number;
    const ended = new Promise<Error>((resolve) => victim.once('error', resolve));
    const { stdout } = await promisify(execFile)(
      'psql',
      ['-h', sb.info.socketDir, '-p', String(sb.info.port), '-U', 'postgres', '-Atc', `select pg_terminate_backend(${pid})`, 'template1'],
      { encoding: 'utf8' },
    );
    expect(stdout.trim()).toBe('t');
    expect((await ended).message).toBe('terminating connection due to administrator command');
  });
});

test('pg_cancel_backend(virtual pid) cancels that client\'s running statement with 57014, while the upstream is busy with it', async () => {
  const sleeper = await connect('sleeper');
  const canceller = await connect('canceller');
  await inTest('cancel running', async () => {
    const started = Date.now();
    const sleeping = sleeper.query('SELECT pg_sleep(30)').catch((e: Error & { code?: string }) => e);
    await untilUpstreamRuns('%SELECT pg_sleep(30)');
    // A driver's version check does not wait for the upstream either (a setting of the server's).
    expect(Number((await canceller.query('SHOW server_version_num')).rows[0].server_version_num)).toBeGreaterThan(90000);
    // node-postgres' own test does it this way: found in pg_stat_activity by its query.
    const res = await canceller.query(`SELECT pid, (SELECT pg_cancel_backend(pid)) AS killed FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()`, [
      'SELECT pg_sleep%',
    ]);
    expect(res.rows).toEqual([{ pid: pidOf(sleeper), killed: true }]);
    expect(await sleeping).toMatchObject({ code: '57014', message: 'canceling statement due to user request' });
    expect(Date.now() - started).toBeLessThan(10_000);
    // Cancelling ends the statement, not the connection.
    expect((await sleeper.query('SELECT 2 AS two')).rows[0].two).toBe(2);
  });
  await sleeper.end();
  await canceller.end();
});

test('pg_cancel_backend of a client queued behind another client\'s transaction answers its statement 57014', async () => {
  const holder = await connect('holder');
  const queued = await connect('queued');
  const canceller = await connect('canceller');
  await inTest('cancel queued', async () => {
    await holder.query('BEGIN');
    // Busy in a statement (an idle transaction would lend the connection): the other one queues.
    const busy = holder.query('SELECT pg_sleep(1)');
    const waiting = queued.query('SELECT 1 AS queued').catch((e: Error & { code?: string }) => e);
    // Queued is running, as its client sees it: found by its statement.
    for (;;) {
      const rows = (await canceller.query('SELECT state, query FROM pg_stat_activity WHERE pid = $1', [pidOf(queued)])).rows;
      if (rows[0]?.query === 'SELECT 1 AS queued') {
        expect(rows[0].state).toBe('active');
        break;
      }
    }
    // The cancel statement itself runs on the side connection: the upstream is the holder's.
    expect((await canceller.query(`SELECT pg_cancel_backend(${pidOf(queued)})`)).rows[0].pg_cancel_backend).toBe(true);
    expect(await waiting).toMatchObject({ code: '57014' });
    await busy;
    await holder.query('COMMIT');
    expect((await queued.query('SELECT 3 AS three')).rows[0].three).toBe(3);
  });
  await Promise.all([holder.end(), queued.end(), canceller.end()]);
});

test('postgres.js terminates a pg client by its pid; a pid that is not ours goes to the server; the sandbox connection cannot be killed', async () => {
  const victim = await connect('pjs-victim');
  const sql = postgres(sb.info.url, { max: 1, onnotice: () => undefined });
  await inTest('postgres.js', async () => {
    const ended = new Promise<Error>((resolve) => victim.once('error', resolve));
    const [row] = await sql`select pg_terminate_backend(${pidOf(victim)}::int) as t`;
    expect(row.t).toBe(true);
    expect((await ended).message).toMatch(/administrator command/);
    // Not a backend at all: Postgres' own answer.
    expect((await sql`select pg_terminate_backend(1) as t`)[0].t).toBe(false);
    // The upstream's real pid is hidden, and refused like a pid that is no backend.
    expect((await sql`select pg_terminate_backend(${sb.upstream!.backendPid}::int) as t`)[0].t).toBe(false);
    expect((await sql`select pg_cancel_backend(${sb.upstream!.backendPid}::int) as t`)[0].t).toBe(false);
    expect(sb.upstream!.lost).toBeUndefined();
  });
  await sql.end();
});
