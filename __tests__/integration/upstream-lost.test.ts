/**
 * The sandbox survives losing its upstream (issue 12): terminated from outside, the connection is
 * replaced; the clients that were using it are told once (JESTPG_UPSTREAM_LOST), the others and
 * every later client are served; the file that lost it fails at its end, the next file does not.
 */
import pg from 'pg';
import { bootServer, connectClient, runTest, untilUpstreamRuns, type TestServer } from '../helpers/server';
import type { Sandbox } from '../../src/proxy/sandbox';
import { withClient } from '../../src/util/admin';

let server: TestServer;
let sb: Sandbox;
const warnings: string[] = [];
const stderrWrite = process.stderr.write.bind(process.stderr);

beforeAll(async () => {
  server = await bootServer(`CREATE TABLE events (id serial PRIMARY KEY, what text NOT NULL);`);
  sb = await server.sandbox({ lockWaitMs: 5000 });
  process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    if (String(chunk).includes('JESTPG_UPSTREAM_LOST')) {
      warnings.push(String(chunk));
      return true;
    }
    return (stderrWrite as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stderr.write;
});

afterAll(async () => {
  process.stderr.write = stderrWrite;
  await server?.stop();
});

const inTest = (name: string, fn: () => Promise<unknown>) => runTest(sb, name, fn);

const connect = (applicationName: string) => connectClient(sb.info.url, { application_name: applicationName });

const killUpstream = async () => {
  const pid = sb.upstream!.backendPid;
  const [row] = await server.direct<{ t: boolean }>('SELECT pg_terminate_backend($1) AS t', [pid]);
  expect(row.t).toBe(true);
};

test('upstream terminated from outside during a test: users told once, idle clients and new ones carry on, the test fails with it, the next file is clean', async () => {
  await sb.beginFile();
  const idle = await connect('idle');
  const inTx = await connect('in-tx');
  const running = await connect('running');
  const count = async (c: pg.Client) => (await c.query('SELECT count(*)::int AS n FROM events')).rows[0].n as number;
  const problems = await inTest('loses the upstream', async () => {
    await idle.query({ name: 'ins', text: 'INSERT INTO events (what) VALUES ($1)', values: ['before'] });
    await idle.query("SET statement_timeout = '4321ms'");
    await inTx.query('BEGIN');
    await inTx.query("INSERT INTO events (what) VALUES ('in tx')");
    const told = new Promise<Error>((resolve) => inTx.once('error', resolve));
    const first = sb.upstream!;
    await killUpstream();
    // The client inside a transaction lost it: told, and disconnected, as by a dying backend.
    expect((await told).message).toMatch(/^JESTPG_UPSTREAM_LOST: .*terminating connection due to administrator command.*new connection/s);
    // The idle client goes on, on a new upstream: its prepared statement and its settings are still there.
    await idle.query({ name: 'ins', text: 'INSERT INTO events (what) VALUES ($1)', values: ['after'] });
    expect(sb.upstream).not.toBe(first);
    expect((await idle.query('SHOW statement_timeout')).rows[0].statement_timeout).toBe('4321ms');
    // Earlier work is gone (the old transaction), later work is there.
    expect((await idle.query('SELECT what FROM events ORDER BY id')).rows).toEqual([{ what: 'after' }]);
    // A statement in flight when it dies gets the error too.
    const sleeping = running.query('SELECT pg_sleep(30)').catch((e: Error) => e);
    await untilUpstreamRuns(server, sb, '%pg_sleep(30)');
    await killUpstream();
    expect(String(await sleeping)).toMatch(/JESTPG_UPSTREAM_LOST/);
    // Every later client is served.
    const later = await connect('later');
    expect(await count(later)).toBe(0);
    await later.end();
  });
  // Said once per loss: as the test's problem (in Jest the test fails with it), not on stderr.
  expect(problems).toHaveLength(2);
  for (const p of problems) expect(p).toMatch(/^JESTPG_UPSTREAM_LOST: .*during test "loses the upstream"/s);
  expect(warnings).toHaveLength(0);
  await sb.endFile();
  // The next file starts clean and ends well.
  await sb.beginFile();
  const next = await connect('next file');
  await inTest('next file', async () => {
    expect(await count(next)).toBe(0);
    await next.query("INSERT INTO events (what) VALUES ('next')");
  });
  await next.end();
  await expect(sb.endFile()).resolves.toMatchObject({ foreign: [] });
});

test('lost outside a test (a hook, or the one command of jest-environment-pg run): a warning at once, and the file fails at its end', async () => {
  await sb.beginFile();
  const c = await connect('file scope');
  await c.query("INSERT INTO events (what) VALUES ('file level')");
  const first = sb.upstream;
  await killUpstream();
  // (A statement sent before the sandbox notices would be one that was using it: told, and closed.)
  while (sb.upstream === first) await new Promise((r) => setImmediate(r));
  // Served again at once, in a new transaction.
  expect((await c.query('SELECT count(*)::int AS n FROM events')).rows[0].n).toBe(0);
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatch(/JESTPG_UPSTREAM_LOST: .*new connection, in a new transaction/s);
  await c.end();
  await expect(sb.endFile()).rejects.toMatchObject({ code: 'JESTPG_UPSTREAM_LOST' });
  await sb.beginFile();
  await expect(sb.endFile()).resolves.toMatchObject({ foreign: [] });
});

test('the upstream lost and no new one to be had: every statement of the client is answered with the error, not only the first', async () => {
  await sb.beginFile();
  const c = await connect('no upstream');
  const first = sb.upstream!;
  const admin = (sql: string) => withClient(server.cluster.url, (a) => a.query(sql));
  await admin('ALTER DATABASE sbx WITH ALLOW_CONNECTIONS false');
  try {
    // (From the cluster's own database: sbx takes no new connections now.)
    await admin(`SELECT pg_terminate_backend(${first.backendPid})`);
    // (A statement sent before the sandbox notices would be one that was using it: told, and closed.)
    while (!first.lost) await new Promise((r) => setImmediate(r));
    // Each of them is a cycle of its own, rejected because the upstream cannot be opened again.
    for (const sql of ['SELECT 1 AS one', 'SELECT 2 AS two', 'SELECT 3 AS three']) {
      await expect(c.query(sql)).rejects.toThrow(/^JESTPG_SERVER_UNREACHABLE: .*"sbx" is not currently accepting connections/s);
    }
  } finally {
    await admin('ALTER DATABASE sbx WITH ALLOW_CONNECTIONS true');
  }
  expect(c.errors).toEqual([]);
  await c.end();
  await expect(sb.endFile()).rejects.toMatchObject({ code: 'JESTPG_UPSTREAM_LOST' });
  await sb.beginFile();
  await expect(sb.endFile()).resolves.toMatchObject({ foreign: [] });
});
