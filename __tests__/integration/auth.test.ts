/**
 * Users other than the sandbox's own are checked as the server would (issue 12's suites log in
 * with their own roles): the role must exist and may log in; its own password is checked against
 * what the server stores, by MD5 or by SCRAM-SHA-256 as Postgres asks for it.
 */
import pg from 'pg';
import postgres from 'postgres';
import { bootServer, runTest, type TestServer } from '../helpers/server';
import type { Sandbox } from '../../src/proxy/sandbox';

let server: TestServer;
let sb: Sandbox;

beforeAll(async () => {
  server = await bootServer();
  await server.direct(`SET password_encryption = 'md5'; CREATE ROLE auth_md5 LOGIN PASSWORD 'md5-pass'`);
  await server.direct(`SET password_encryption = 'scram-sha-256'; CREATE ROLE auth_scram LOGIN PASSWORD 'scram-pass'`);
  await server.direct(`CREATE ROLE auth_nologin NOLOGIN`);
  sb = await server.sandbox();
  await sb.beginFile();
});

afterAll(async () => {
  await sb?.endFile();
  await server?.direct('DROP ROLE IF EXISTS auth_md5; DROP ROLE IF EXISTS auth_scram; DROP ROLE IF EXISTS auth_nologin').catch(() => undefined);
  await server?.stop();
});

const tcp = (user: string, password: string | (() => string)) => new pg.Client({ host: '127.0.0.1', port: sb.info.port, user, password, database: 'anything' });

test('a role with an MD5 password logs in with it (or the run secret); a wrong one gets 28P01', async () => {
  await runTest(sb, 'md5', async () => {
    const c = tcp('auth_md5', 'md5-pass');
    await c.connect();
    expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    await c.end();
    const s = tcp('auth_md5', sb.info.password);
    await s.connect();
    await s.end();
    await expect(tcp('auth_md5', 'wrong').connect()).rejects.toMatchObject({ code: '28P01', message: 'password authentication failed for user "auth_md5"' });
  });
});

test('a role with a SCRAM verifier logs in by SCRAM-SHA-256, as Postgres asks; a wrong password gets 28P01', async () => {
  await runTest(sb, 'scram', async () => {
    const c = tcp('auth_scram', 'scram-pass');
    let mechanism: string | undefined;
    c.connection.once('authenticationSASLContinue', () => (mechanism = (c as unknown as { saslSession: { mechanism: string } }).saslSession.mechanism));
    await c.connect();
    expect(mechanism).toBe('SCRAM-SHA-256');
    await c.end();
    await expect(tcp('auth_scram', 'wrong').connect()).rejects.toMatchObject({ code: '28P01' });
    // The client's own check of the server's signature passes too (postgres.js verifies it).
    const sql = postgres({ host: '127.0.0.1', port: sb.info.port, user: 'auth_scram', pass: 'scram-pass', database: 'x', max: 1 });
    expect((await sql`select 2 as two`)[0].two).toBe(2);
    await sql.end();
  });
});

test('a role that does not exist, or may not log in, is refused with 28000, also on the unix socket', async () => {
  await runTest(sb, 'roles', async () => {
    await expect(tcp('no_such_role', sb.info.password).connect()).rejects.toMatchObject({ code: '28000', message: 'role "no_such_role" does not exist' });
    await expect(tcp('auth_nologin', sb.info.password).connect()).rejects.toMatchObject({ code: '28000', message: 'role "auth_nologin" is not permitted to log in' });
    const unix = new pg.Client({ host: sb.info.socketDir, port: sb.info.port, user: 'no_such_role', database: 'x' });
    await expect(unix.connect()).rejects.toMatchObject({ code: '28000' });
    // The sandbox's own user, as in DATABASE_URL, is never looked up.
    const own = new pg.Client({ connectionString: sb.info.url });
    await own.connect();
    await own.end();
  });
});
