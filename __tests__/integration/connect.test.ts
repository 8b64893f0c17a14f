/**
 * The upstream's own startup (src/proxy/connect.ts) against a real cluster: unix socket (trust),
 * TCP with SCRAM-SHA-256, MD5 and cleartext passwords, ~/.pgpass, TLS (require, verify-full,
 * prefer), and the errors a user meets (wrong password, no password, no database, a server that
 * never answers). Each success is checked on the server: the authenticated identity
 * (`system_user`), the backend pid, `pg_stat_ssl`.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { findBinaries } from '../../src/server/binaries';
import { serverOsUser, startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { B, F } from '../../src/proxy/codes';
import { connect, type Connected } from '../../src/proxy/connect';
import { Framer } from '../../src/proxy/framer';
import { Sandbox } from '../../src/proxy/sandbox';
import { stopOnExit } from '../helpers/watchdog';

let cluster: ClusterInfo;
let dismiss: () => void;
let admin: Client;
let dir: string;
let cert: string;
const open: Connected[] = [];
const savedPassfile = process.env.PGPASSFILE;

beforeAll(async () => {
  // A self-signed certificate for localhost / 127.0.0.1, readable by the server's OS user only.
  dir = mkdtempSync(path.join(os.tmpdir(), 'jest-pg-connect-test-'));
  chmodSync(dir, 0o755);
  cert = path.join(dir, 'server.crt');
  const key = path.join(dir, 'server.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'pipe' });
  chmodSync(key, 0o600);
  const osUser = serverOsUser();
  if (osUser) chownSync(key, osUser.uid, osUser.gid);
  const b = await findBinaries({});
  cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir, settings: { ssl: 'on', ssl_cert_file: cert, ssl_key_file: key } });
  dismiss = stopOnExit(cluster, dir);
  admin = new Client({ connectionString: cluster.url, application_name: 'connect-test' });
  await admin.connect();
  await admin.query("CREATE ROLE jpg_scram LOGIN PASSWORD 'scram-pw'");
  await admin.query("CREATE ROLE jpg_plain LOGIN PASSWORD 'plain-pw'");
  await admin.query("SET password_encryption = 'md5'");
  await admin.query("CREATE ROLE jpg_md5 LOGIN PASSWORD 'md5-pw'");
  // MD5 and cleartext for those two roles, ahead of initdb's scram-sha-256 lines.
  const hba = (await admin.query<{ hba_file: string }>('SHOW hba_file')).rows[0].hba_file;
  const text = execFileSync('cat', [hba], { encoding: 'utf8' });
  writeFileSync(hba, `host all jpg_md5 127.0.0.1/32 md5\nhost all jpg_plain 127.0.0.1/32 password\n${text}`);
  const before = (await admin.query<{ t: Date }>('SELECT pg_conf_load_time() AS t')).rows[0].t.getTime();
  await admin.query('SELECT pg_reload_conf()');
  // A new backend inherits the postmaster's reload time: wait until one has the new rules.
  const deadline = Date.now() + 10_000;
  for (;;) {
    const c = new Client({ connectionString: cluster.url });
    await c.connect();
    const t = (await c.query<{ t: Date }>('SELECT pg_conf_load_time() AS t')).rows[0].t.getTime();
    await c.end();
    if (t > before) break;
    if (Date.now() > deadline) throw new Error('pg_hba.conf was not reloaded within 10 s');
  }
  process.env.PGPASSFILE = path.join(dir, 'no-pgpass'); // never the machine's ~/.pgpass
}, 60_000);

afterAll(async () => {
  for (const c of open) c.socket.destroy();
  await admin?.end().catch(() => undefined);
  if (cluster) await stopCluster(cluster);
  dismiss?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
  if (savedPassfile === undefined) delete process.env.PGPASSFILE;
  else process.env.PGPASSFILE = savedPassfile;
}, 60_000);

const tcp = (user: string, password?: string, query = '') =>
  `postgres://${user}${password === undefined ? '' : ':' + encodeURIComponent(password)}@127.0.0.1:${cluster.port}/postgres${query}`;
const socketUrl = (query = '') => `postgres://postgres@localhost:${cluster.port}/postgres?host=${encodeURIComponent(cluster.socketDir)}${query}`;

async function up(url: string, applicationName = 'connect-test upstream'): Promise<Connected> {
  const c = await connect(url, { applicationName, timeoutMs: 10_000 });
  open.push(c);
  return c;
}

/** A simple Query over the connected socket; resolves with the rows as text. */
function rows(c: Connected, sql: string): Promise<(string | null)[][]> {
  return new Promise((resolve, reject) => {
    const framer = new Framer();
    const out: (string | null)[][] = [];
    let error = '';
    const onData = (chunk: Buffer) =>
      framer.push(chunk, (buf, code, start, end) => {
        if (code === B.DataRow) {
          const n = buf.readInt16BE(start + 5);
          let off = start + 7;
          const row: (string | null)[] = [];
          for (let i = 0; i < n; i++) {
            const len = buf.readInt32BE(off);
            off += 4;
            row.push(len < 0 ? null : buf.toString('utf8', off, off + len));
            if (len > 0) off += len;
          }
          out.push(row);
        } else if (code === B.ErrorResponse) error = buf.toString('utf8', start + 5, end);
        else if (code === B.ReadyForQuery) {
          c.socket.removeListener('data', onData);
          if (error) reject(new Error(error));
          else resolve(out);
        }
      });
    c.socket.on('data', onData);
    c.socket.resume();
    const body = Buffer.from(sql + '\0');
    const head = Buffer.alloc(5);
    head[0] = F.Query;
    head.writeInt32BE(4 + body.length, 1);
    c.socket.write(Buffer.concat([head, body]));
  });
}

async function expectBackend(c: Connected, identity: string | null, ssl: boolean): Promise<void> {
  const [[pid, who, encrypted]] = await rows(c, 'SELECT pg_backend_pid(), system_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())');
  expect(Number(pid)).toBe(c.backendPid);
  expect(who).toBe(identity);
  expect(encrypted).toBe(ssl ? 't' : 'f');
  expect(c.tls).toBe(ssl);
  expect(c.params.get('server_version')).toMatch(/^\d+/);
  expect(c.params.get('application_name')).toBe('connect-test upstream');
}

test('unix socket, trust: no password, no TLS (even when asked for: libpq does the same)', async () => {
  const c = await up(socketUrl('&sslmode=require'));
  expect(c.cancelTarget).toEqual({ path: path.join(cluster.socketDir, `.s.PGSQL.${cluster.port}`) });
  await expectBackend(c, null, false);
});

test.each([
  ['SCRAM-SHA-256', 'jpg_scram', 'scram-pw', 'scram-sha-256'],
  ['MD5', 'jpg_md5', 'md5-pw', 'md5'],
  ['cleartext', 'jpg_plain', 'plain-pw', 'password'],
])('TCP with a %s password', async (_name, user, password, method) => {
  const c = await up(tcp(user, password));
  expect(c.cancelTarget).toEqual({ host: '127.0.0.1', port: cluster.port });
  await expectBackend(c, `${method}:${user}`, false);
});

test('a password from the password file when the URL has none', async () => {
  const file = path.join(dir, 'pgpass');
  writeFileSync(file, `127.0.0.1:${cluster.port}:*:jpg_scram:scram-pw\n`, { mode: 0o600 });
  process.env.PGPASSFILE = file;
  try {
    await expectBackend(await up(tcp('jpg_scram')), 'scram-sha-256:jpg_scram', false);
  } finally {
    process.env.PGPASSFILE = path.join(dir, 'no-pgpass');
  }
});

test('TLS: sslmode=require, verify-full with the CA, prefer', async () => {
  await expectBackend(await up(tcp('jpg_scram', 'scram-pw', '?sslmode=require')), 'scram-sha-256:jpg_scram', true);
  const full = `postgres://jpg_scram:scram-pw@localhost:${cluster.port}/postgres?sslmode=verify-full&sslrootcert=${encodeURIComponent(cert)}`;
  await expectBackend(await up(full), 'scram-sha-256:jpg_scram', true);
  await expectBackend(await up(tcp('jpg_md5', 'md5-pw', '?sslmode=prefer')), 'md5:jpg_md5', true);
});

test('errors say what failed', async () => {
  const fails = (url: string, opts = {}) => connect(url, { applicationName: 'connect-test', timeoutMs: 10_000, ...opts });
  await expect(fails(tcp('jpg_scram', 'wrong'))).rejects.toMatchObject({ code: '28P01', message: expect.stringMatching(/password authentication failed for user "jpg_scram"/) });
  await expect(fails(tcp('jpg_md5', 'wrong'))).rejects.toMatchObject({ code: '28P01' });
  await expect(fails(tcp('jpg_scram'))).rejects.toThrow(/asks for a password for user "jpg_scram" and none was given/);
  await expect(fails(tcp('jpg_scram', 'scram-pw').replace('/postgres', '/no_such_db'))).rejects.toMatchObject({ code: '3D000' });
  // verify-full without the self-signed certificate's CA.
  await expect(fails(`postgres://jpg_scram:scram-pw@localhost:${cluster.port}/postgres?sslmode=verify-full`)).rejects.toThrow(/negotiating TLS with localhost:\d+: self[- ]signed certificate/);
  await expect(fails(`postgres://u@127.0.0.1:1/postgres`)).rejects.toThrow(/connecting to 127.0.0.1:1: connect ECONNREFUSED/);
  // A server that accepts and never answers; one that hangs up at once.
  const silent = net.createServer(() => undefined);
  const rude = net.createServer((s) => s.destroy());
  await Promise.all([silent, rude].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))));
  try {
    const port = (s: net.Server) => (s.address() as net.AddressInfo).port;
    await expect(fails(`postgres://u:p@127.0.0.1:${port(silent)}/d`, { timeoutMs: 300 })).rejects.toThrow(/timed out after 300 ms starting up as user "u", database "d"/);
    await expect(fails(`postgres://u:p@127.0.0.1:${port(rude)}/d`)).rejects.toThrow(/the server closed the connection while starting up/);
  } finally {
    silent.close();
    rude.close();
  }
});

test('a sandbox whose upstream is TCP + TLS + SCRAM: clients work through it', async () => {
  await admin.query('CREATE DATABASE connect_sbx OWNER jpg_scram');
  const sb = await Sandbox.start({
    upstreamUrl: `postgres://jpg_scram:scram-pw@127.0.0.1:${cluster.port}/connect_sbx?sslmode=require`,
    socketDir: path.join(dir, 'sbx'),
    secret: 'sandbox-secret',
    isolation: 'test',
    graceMs: 100,
    lockWaitMs: 1000,
    label: 'connect-test sandbox',
  });
  try {
    await sb.beginFile();
    const c = new Client({ connectionString: sb.info.url });
    await c.connect();
    try {
      await c.query('CREATE TABLE t (id int)');
      await c.query('INSERT INTO t VALUES (1)');
      expect((await c.query('SELECT count(*)::int AS n FROM t')).rows[0].n).toBe(1);
    } finally {
      await c.end();
    }
    await sb.endFile();
    // The upstream is the TLS backend of jpg_scram, and the file's table was rolled back.
    const r = await admin.query(
      `SELECT s.ssl, a.usename FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = 'connect_sbx' AND a.backend_type = 'client backend'`,
    );
    expect(r.rows).toEqual([{ ssl: true, usename: 'jpg_scram' }]);
  } finally {
    await sb.close();
  }
  const c = new Client({ connectionString: cluster.url.replace(/\/postgres$/, '/connect_sbx') });
  await c.connect();
  expect((await c.query("SELECT to_regclass('t') AS t")).rows[0].t).toBeNull();
  await c.end();
});

test("the run's driver-free admin client answers as pg does (rows, types, parameters, errors), on TCP + SCRAM and the unix socket", async () => {
  const { AdminClient } = await import('../../src/proxy/admin-client');
  const sql =
    "SELECT $1::int AS i, $2::text AS t, $3::bool AS b, NULL::text AS n, 2::int8 AS big, 1.5::float8 AS f, '2026-01-02 03:04:05.5+00'::timestamptz AS ts, " +
    "'{\"a\":1}'::jsonb AS j, 26::oid AS o, $4::text[] AS arr, 'x' = ANY($5) AS inlist, $6::text AS bs";
  const values = [7, "it's", true, ['p', 'q'], ['x', 'y'], 'back\\slash \\n'];
  const expected = (await admin.query(sql, values)).rows;
  for (const url of [tcp('jpg_scram', 'scram-pw'), socketUrl()]) {
    const c = await AdminClient.connect(url, { applicationName: 'connect-test admin' });
    try {
      const got = (await c.query(sql, values)).rows;
      // Arrays come back as text (none of the run's own statements reads one).
      expect(got).toEqual(expected.map((r) => ({ ...r, arr: '{p,q}' })));
      await expect(c.query('SELECT 1/0')).rejects.toMatchObject({ code: '22012', message: 'division by zero' });
      expect((await c.query<{ app: string }>("SELECT current_setting('application_name') AS app")).rows).toEqual([{ app: 'connect-test admin' }]);
    } finally {
      await c.end();
    }
  }
  await expect(AdminClient.connect(tcp('jpg_scram', 'wrong'), { applicationName: 'x' })).rejects.toMatchObject({ code: 'JESTPG_SERVER_UNREACHABLE' });
  const aborted = new AbortController();
  aborted.abort(new Error('bounded'));
  await expect(AdminClient.connect(socketUrl(), { applicationName: 'x', signal: aborted.signal })).rejects.toThrow('bounded');
  // A signal that aborts later ends the connection: the query on it fails.
  const later = new AbortController();
  const c = await AdminClient.connect(socketUrl(), { applicationName: 'x', signal: later.signal });
  const slow = c.query('SELECT pg_sleep(5)');
  later.abort(new Error('bounded'));
  await expect(slow).rejects.toThrow();
});
