/** Protocol coverage of the sandbox against real drivers and a real server. */
import net from 'node:net';
import { execFile } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import pg from 'pg';
import Cursor from 'pg-cursor';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import postgres from 'postgres';
import { closeFile, openFile, runTest, type TestServer } from '../helpers/server';
import type { Sandbox } from '../../src/proxy/sandbox';

let server: TestServer;
let sb: Sandbox;

beforeAll(async () => {
  ({ server, sb } = await openFile(`
    CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE NOT NULL);
    INSERT INTO items (name) SELECT 'seed' || g FROM generate_series(1, 100) g;
  `));
});

afterAll(() => closeFile(server, sb));

const inTest = (name: string, fn: () => Promise<unknown>) => runTest(sb, name, fn);

const connect = async (config: pg.ClientConfig = {}) => {
  const c = new pg.Client({ connectionString: sb.info.url, ...config });
  await c.connect();
  return c;
};

test('COPY FROM STDIN and COPY TO STDOUT', async () => {
  const c = await connect();
  await inTest('copy', async () => {
    await pipeline(Readable.from(['copied1\n', 'copied2\n']), c.query(copyFrom('COPY items (name) FROM STDIN')));
    const chunks: Buffer[] = [];
    const out = c.query(copyTo("COPY (SELECT name FROM items WHERE name LIKE 'copied%' ORDER BY name) TO STDOUT"));
    for await (const chunk of out) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe('copied1\ncopied2\n');
    // A failing COPY does not poison the file transaction.
    await expect(pipeline(Readable.from(['seed1\n']), c.query(copyFrom('COPY items (name) FROM STDIN')))).rejects.toMatchObject({ code: '23505' });
    expect((await c.query("SELECT count(*)::int AS n FROM items WHERE name LIKE 'copied%'")).rows[0].n).toBe(2);
  });
  await c.end();
});

test('pg-cursor: Execute with a row limit and Flush, without Sync, holds the upstream until done', async () => {
  const c = await connect();
  const other = await connect();
  await inTest('cursor', async () => {
    const cursor = c.query(new Cursor('SELECT id FROM items ORDER BY id'));
    const first = await cursor.read(10);
    expect(first.map((r: { id: number }) => r.id)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    const otherQuery = other.query('SELECT 1 AS x'); // waits for the cursor's cycle
    const second = await cursor.read(5);
    expect(second[0].id).toBe(11);
    await cursor.close();
    expect((await otherQuery).rows[0].x).toBe(1);
  });
  await c.end();
  await other.end();
});

test('unix socket connections are trusted (any database name, a role of the server); TCP needs the run secret', async () => {
  const unix = new pg.Client({ host: sb.info.socketDir, port: sb.info.port, user: 'postgres', database: 'whatever' });
  await unix.connect();
  await inTest('unix', async () => {
    expect((await unix.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });
  await unix.end();
  const wrong = new pg.Client({ host: '127.0.0.1', port: sb.info.port, user: 'postgres', password: 'nope', database: 'x' });
  await expect(wrong.connect()).rejects.toThrow(/JESTPG_AUTH_FAILED/);
});

test('a malformed message gets an ErrorResponse and closes that client only; the file transaction survives', async () => {
  const c = await connect();
  await inTest('malformed', async () => {
    await c.query("INSERT INTO items (name) VALUES ('before-garbage')");
    const reply = await new Promise<Buffer>((resolve) => {
      const s = net.connect(sb.info.port, '127.0.0.1');
      const chunks: Buffer[] = [];
      s.on('data', (d) => chunks.push(d));
      s.on('close', () => resolve(Buffer.concat(chunks)));
      // Startup with a bad protocol version.
      const startup = Buffer.alloc(8);
      startup.writeInt32BE(8, 0);
      startup.writeInt32BE(0x00090000, 4);
      s.write(startup);
    });
    expect(reply[0]).toBe(0x45); // ErrorResponse
    expect(reply.toString()).toMatch(/JESTPG_PROTOCOL.*protocol version 9\.0/);
    expect((await c.query("SELECT count(*)::int AS n FROM items WHERE name = 'before-garbage'")).rows[0].n).toBe(1);
  });
  await c.end();
});

test('a client that disconnects inside a transaction has it rolled back, like a real backend', async () => {
  const a = await connect();
  const b = await connect();
  await inTest('disconnect', async () => {
    await a.query('BEGIN');
    await a.query("INSERT INTO items (name) VALUES ('abandoned')");
    await a.end();
    expect((await b.query("SELECT count(*)::int AS n FROM items WHERE name = 'abandoned'")).rows[0].n).toBe(0);
  });
  await b.end();
});

test('per-client startup parameters, notices and ParameterStatus', async () => {
  const a = await connect({ application_name: 'app-a' });
  const b = await connect({ application_name: 'app-b', options: '-c search_path=pg_catalog' });
  await inTest('settings', async () => {
    expect((await a.query("SELECT current_setting('application_name') AS v")).rows[0].v).toBe('app-a');
    expect((await b.query("SELECT current_setting('application_name') AS v")).rows[0].v).toBe('app-b');
    expect((await b.query("SELECT current_setting('search_path') AS v")).rows[0].v).toBe('pg_catalog');
    expect((await a.query("SELECT current_setting('application_name') AS v")).rows[0].v).toBe('app-a');
    // A client without settings sees the defaults, not the previous client's.
    const plain = await connect();
    expect((await plain.query("SELECT current_setting('search_path') AS v")).rows[0].v).toBe('"$user", public');
    await plain.end();
    const notices: string[] = [];
    a.on('notice', (n) => notices.push(n.message ?? ''));
    await a.query("DO $$BEGIN RAISE NOTICE 'hello from plpgsql'; END$$");
    expect(notices).toContain('hello from plpgsql');
    const warnings: string[] = [];
    b.on('notice', (n) => warnings.push(n.message ?? ''));
    await b.query('COMMIT'); // no transaction: a warning, like Postgres
    expect(warnings).toContain('there is no transaction in progress');
  });
  await a.end();
  await b.end();
});

test('prepared statement names are private per client: DEALLOCATE and Close act on the own ones only', async () => {
  const sqlA = postgres(sb.info.url, { max: 1 });
  const sqlB = postgres(sb.info.url, { max: 1 });
  await inTest('names', async () => {
    // Both prepare the same statement text (postgres.js names it the same way on each connection).
    expect((await sqlA`SELECT ${1}::int AS x`)[0].x).toBe(1);
    expect((await sqlB`SELECT ${2}::int AS x`)[0].x).toBe(2);
    await sqlA.unsafe('DEALLOCATE ALL');
    expect((await sqlB`SELECT ${3}::int AS x`)[0].x).toBe(3);
    // A's statement cache now points at a deallocated name; postgres.js re-prepares on 26000.
    expect((await sqlA`SELECT ${4}::int AS x`)[0].x).toBe(4);
  });
  await sqlA.end();
  await sqlB.end();
});

test('cancel requests reach the query of the client that asked', async () => {
  const sql = postgres(sb.info.url, { max: 1 });
  await inTest('cancel', async () => {
    const q = sql`SELECT pg_sleep(10)`;
    const result = q.catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 100));
    q.cancel();
    expect(String(await result)).toMatch(/cancel/i);
    expect((await sql`SELECT 1 AS one`)[0].one).toBe(1);
  });
  await sql.end();
});

test('a child process inherits DATABASE_URL, writes through the sandbox, and the write is rolled back', async () => {
  const script = `const {Client}=require('pg');(async()=>{const c=new Client({connectionString:process.env.DATABASE_URL});await c.connect();await c.query("INSERT INTO items (name) VALUES ('from-child')");await c.end();})().catch(e=>{console.error(e);process.exit(1)})`;
  const c = await connect();
  await inTest('child', async () => {
    await new Promise<void>((resolve, reject) =>
      execFile(process.execPath, ['-e', script], { env: { ...process.env, DATABASE_URL: sb.info.url } }, (err) => (err ? reject(err) : resolve())),
    );
    expect((await c.query("SELECT count(*)::int AS n FROM items WHERE name = 'from-child'")).rows[0].n).toBe(1);
  });
  await inTest('after child', async () => {
    expect((await c.query("SELECT count(*)::int AS n FROM items WHERE name = 'from-child'")).rows[0].n).toBe(0);
  });
  await c.end();
});

test('at the end of the file every client is closed, and an idle pool learns it with a FATAL', async () => {
  const pool = new pg.Pool({ connectionString: sb.info.url });
  const errors: string[] = [];
  pool.on('error', (e) => errors.push(e.message));
  await inTest('pool', () => pool.query('SELECT 1'));
  const report = await sb.endFile();
  expect(report.open.map((p) => p.message).join('\n')).toMatch(/opened in .*SELECT 1/s);
  await new Promise((r) => setTimeout(r, 50));
  expect(errors.join('\n')).toMatch(/JESTPG_FILE_ENDED/);
  await pool.end();
  await sb.beginFile();
});

/** A raw client: send bytes, collect everything until the server closes or `ms` pass. */
function raw(port: number, send: Buffer[], ms = 300): Promise<Buffer> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    const done = () => resolve(Buffer.concat(chunks));
    s.on('close', done);
    s.on('connect', () => send.forEach((b, i) => setTimeout(() => s.write(b), i * 20)));
    setTimeout(() => s.destroy(), ms);
  });
}

function startupPacket(params: Record<string, string>): Buffer {
  const body = Buffer.concat([...Object.entries(params).map(([k, v]) => Buffer.from(`${k}\0${v}\0`)), Buffer.from([0])]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + body.length, 0);
  head.writeInt32BE(196608, 4);
  return Buffer.concat([head, body]);
}

test('SSLRequest is answered N, then the startup proceeds on the same connection', async () => {
  const ssl = Buffer.alloc(8);
  ssl.writeInt32BE(8, 0);
  ssl.writeInt32BE(80877103, 4);
  const reply = await raw(sb.info.port, [ssl, startupPacket({ user: 'postgres', database: 'x' })]);
  expect(reply[0]).toBe(0x4e); // 'N'
  expect(reply[1]).toBe(0x52); // 'R': authentication request (md5 on TCP)
  expect(reply.readInt32BE(6)).toBe(5);
});

test('an unknown message type after startup: ErrorResponse, that client closed, others unaffected', async () => {
  const unixClient = new pg.Client({ host: sb.info.socketDir, port: sb.info.port, user: 'postgres', database: 'd' });
  await unixClient.connect();
  const reply = await new Promise<Buffer>((resolve) => {
    const s = net.connect(`${sb.info.socketDir}/.s.PGSQL.${sb.info.port}`);
    const chunks: Buffer[] = [];
    s.on('data', (d) => {
      chunks.push(d);
      if (Buffer.concat(chunks).includes(Buffer.from([0x5a, 0, 0, 0, 5, 0x49])) && chunks.length === 1) s.write(Buffer.from([0x7a, 0, 0, 0, 4]));
    });
    s.on('close', () => resolve(Buffer.concat(chunks)));
    s.write(startupPacket({ user: 'postgres', database: 'd' }));
  });
  expect(reply.toString()).toMatch(/JESTPG_PROTOCOL: Protocol violation from the client: unknown message type "z"/);
  await inTest('after garbage', async () => {
    expect((await unixClient.query('SELECT 5 AS five')).rows[0].five).toBe(5);
  });
  await unixClient.end();
});

test('isolation "file": tests share the file transaction, which is rolled back at the end of the file', async () => {
  // Its own database: the end-of-file check terminates any other backend on the database.
  await server.direct('CREATE DATABASE sbx_file');
  const fileUrl = server.dbUrl.replace(/\/sbx(\?|$)/, '/sbx_file$1');
  const { withClient } = await import('../../src/util/admin');
  await withClient(fileUrl, (c) => c.query('CREATE TABLE items (id serial PRIMARY KEY, name text UNIQUE NOT NULL)'));
  const fileSb = await server.sandbox({ isolation: 'file', upstreamUrl: fileUrl });
  await fileSb.beginFile();
  const c = new pg.Client({ connectionString: fileSb.info.url });
  await c.connect();
  fileSb.beginTest('one');
  await c.query("INSERT INTO items (name) VALUES ('file-scoped')");
  await fileSb.endTest();
  fileSb.beginTest('two');
  expect((await c.query("SELECT count(*)::int AS n FROM items WHERE name = 'file-scoped'")).rows[0].n).toBe(1);
  await fileSb.endTest();
  await c.end();
  await fileSb.endFile();
  expect(await withClient(fileUrl, async (d) => (await d.query("SELECT count(*)::int AS n FROM items WHERE name = 'file-scoped'")).rows)).toEqual([{ n: 0 }]);
  await fileSb.close();
});

/** A minimal raw protocol client on the trusted unix socket. */
async function rawClient() {
  const s = net.connect(`${sb.info.socketDir}/.s.PGSQL.${sb.info.port}`);
  let buf = Buffer.alloc(0);
  const waiters: (() => void)[] = [];
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    waiters.splice(0).forEach((w) => w());
  });
  const frame = (code: string, body: Buffer) => {
    const head = Buffer.alloc(5);
    head[0] = code.charCodeAt(0);
    head.writeInt32BE(body.length + 4, 1);
    return Buffer.concat([head, body]);
  };
  const cstr = (t: string) => Buffer.from(t + '\0');
  const int16 = (n: number) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
  const int32 = (n: number) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };
  /** Send frames, resolve with every message type letter up to and including ReadyForQuery. */
  const roundTrip = (...frames: Buffer[]) =>
    new Promise<string>((resolve) => {
      buf = Buffer.alloc(0);
      s.write(Buffer.concat(frames));
      const check = () => {
        const types: string[] = [];
        let off = 0;
        while (off + 5 <= buf.length) {
          const len = buf.readInt32BE(off + 1);
          if (off + 1 + len > buf.length) break;
          const t = String.fromCharCode(buf[off]);
          types.push(t === 'D' ? `D(${buf.toString('utf8', off + 11, off + 1 + len)})` : t === 'Z' ? `Z${String.fromCharCode(buf[off + 5])}` : t);
          off += 1 + len;
          if (t === 'Z') return resolve(types.join(' '));
        }
        waiters.push(check);
      };
      check();
    });
  const startup = Buffer.concat([cstr('user'), cstr('postgres'), cstr('database'), cstr('d'), Buffer.from([0])]);
  const head = Buffer.alloc(8);
  head.writeInt32BE(8 + startup.length, 0);
  head.writeInt32BE(196608, 4);
  await roundTrip(Buffer.concat([head, startup]));
  return {
    roundTrip,
    parse: (name: string, sql: string) => frame('P', Buffer.concat([cstr(name), cstr(sql), int16(0)])),
    bind: (portal: string, stmt: string, values: string[]) =>
      frame('B', Buffer.concat([cstr(portal), cstr(stmt), int16(0), int16(values.length), ...values.flatMap((v) => [int32(Buffer.byteLength(v)), Buffer.from(v)]), int16(0)])),
    execute: (portal: string) => frame('E', Buffer.concat([cstr(portal), int32(0)])),
    sync: () => frame('S', Buffer.alloc(0)),
    query: (sql: string) => frame('Q', cstr(sql)),
    end: () => s.end(frame('X', Buffer.alloc(0))),
  };
}

test('the unnamed statement survives other clients and guard savepoints between Parse and a later Bind', async () => {
  const a = await rawClient();
  const b = await rawClient();
  await inTest('unnamed', async () => {
    expect(await a.roundTrip(a.parse('', 'SELECT $1::text AS v'), a.sync())).toBe('1 ZI');
    // Another client's simple query and unnamed statement replace the upstream's unnamed one.
    expect(await b.roundTrip(b.query('SELECT 1'))).toBe('T D(1) C ZI');
    expect(await b.roundTrip(b.parse('', 'SELECT 2'), b.bind('', '', []), b.execute(''), b.sync())).toBe('1 2 D(2) C ZI');
    // A binds its unnamed statement in a later cycle, as the protocol allows.
    expect(await a.roundTrip(a.bind('', '', ['mine']), a.execute(''), a.sync())).toBe('2 D(mine) C ZI');
    // Named statements of two clients with the same name do not collide.
    expect(await a.roundTrip(a.parse('s1', 'SELECT 10'), a.sync())).toBe('1 ZI');
    expect(await b.roundTrip(b.parse('s1', 'SELECT 20'), b.sync())).toBe('1 ZI');
    expect(await a.roundTrip(a.bind('', 's1', []), a.execute(''), a.sync())).toBe('2 D(10) C ZI');
    expect(await b.roundTrip(b.bind('', 's1', []), b.execute(''), b.sync())).toBe('2 D(20) C ZI');
    // BEGIN/COMMIT through the extended protocol, with the status each client should see.
    expect(await a.roundTrip(a.parse('', 'BEGIN'), a.bind('', '', []), a.execute(''), a.sync())).toBe('1 2 C ZT');
    expect(await a.roundTrip(a.query("INSERT INTO items (name) VALUES ('ext-tx')"))).toBe('C ZT');
    expect(await a.roundTrip(a.parse('c', 'COMMIT'), a.bind('', 'c', []), a.execute(''), a.sync())).toBe('1 2 C ZI');
    expect(await b.roundTrip(b.query("SELECT count(*) FROM items WHERE name = 'ext-tx'"))).toBe('T D(1) C ZI');
  });
  a.end();
  b.end();
});

test('two-phase commit, where the server has it off (max_prepared_transactions = 0): Postgres\' own refusal, the transaction rolled back, nothing prepared', async () => {
  const sql = postgres(sb.info.url, { max: 1, onnotice: () => undefined });
  expect(sb.twoPhase).toBe(false);
  await inTest('prepare transaction', async () => {
    await sql`INSERT INTO items (name) VALUES ('kept-before-2pc')`;
    // Outside a transaction: a warning, as in Postgres.
    expect((await sql.unsafe(`prepare transaction 'tx1'`, [], { prepare: true })).command).toBe('ROLLBACK');
    expect((await sql`SELECT count(*)::int AS n FROM items WHERE name = 'kept-before-2pc'`)[0].n).toBe(1);
    // postgres.js's two-phase commit: PREPARE TRANSACTION instead of COMMIT. Refused, and, as in
    // Postgres, the transaction is over (rolled back): the connection is free again (max: 1).
    await expect(
      sql.begin(async (tx) => {
        await tx`INSERT INTO items (name) VALUES ('in-2pc')`;
        await tx.prepare('tx2');
      }),
    ).rejects.toMatchObject({ code: '55000', message: 'prepared transactions are disabled' });
    expect((await sql`SELECT count(*)::int AS n FROM items WHERE name = 'in-2pc'`)[0].n).toBe(0);
  });
  const c = await connect();
  await inTest('prepare transaction, simple query', async () => {
    await c.query('BEGIN');
    await c.query("INSERT INTO items (name) VALUES ('in-2pc-simple')");
    await expect(c.query("PREPARE TRANSACTION 'tx3'")).rejects.toMatchObject({ code: '55000', hint: 'Set max_prepared_transactions to a nonzero value.' });
    expect((await c.query("SELECT count(*)::int AS n FROM items WHERE name = 'in-2pc-simple'")).rows[0].n).toBe(0);
  });
  await c.end();
  await sql.end();
  expect(await server.direct('SELECT count(*)::int AS n FROM pg_prepared_xacts')).toEqual([{ n: 0 }]);
});

test('two-phase commit, where the server has it on: PREPARE TRANSACTION ends the transaction keeping its work, COMMIT PREPARED of it succeeds', async () => {
  sb.twoPhase = true; // as read from a server with max_prepared_transactions > 0 (this one has 0)
  const sql = postgres(sb.info.url, { max: 1, onnotice: () => undefined });
  const c = await connect();
  try {
    await inTest('2pc on', async () => {
      // postgres.js' own test "Prepared transaction".
      await sql`create table test2pc (a int)`;
      await sql.begin(async (tx) => {
        await tx`insert into test2pc values(1)`;
        await tx.prepare('tx1');
      });
      await sql`commit prepared 'tx1'`;
      expect((await sql`select count(1)::int as n from test2pc`)[0].n).toBe(1);
      await sql`drop table test2pc`;
      // Postgres' answers for what cannot be played.
      await expect(c.query("COMMIT PREPARED 'tx1'")).rejects.toMatchObject({ code: '42704', message: 'prepared transaction with identifier "tx1" does not exist' });
      await c.query('BEGIN');
      await expect(c.query("COMMIT PREPARED 'x'")).rejects.toMatchObject({ code: '25001' });
      await c.query('ROLLBACK');
      await c.query('BEGIN');
      await c.query("INSERT INTO items (name) VALUES ('prepared-simple')");
      expect((await c.query("PREPARE TRANSACTION 'tx2'")).command).toBe('PREPARE');
      await expect(c.query("ROLLBACK PREPARED 'tx2'")).rejects.toThrow(/JESTPG_UNSUPPORTED_STATEMENT.*ROLLBACK PREPARED/);
      expect((await c.query("SELECT count(*)::int AS n FROM items WHERE name = 'prepared-simple'")).rows[0].n).toBe(1);
    });
  } finally {
    sb.twoPhase = false;
    await c.end();
    await sql.end();
  }
  expect(await server.direct('SELECT count(*)::int AS n FROM pg_prepared_xacts')).toEqual([{ n: 0 }]);
});

test('postgres.js after a refused two-phase commit: its next transactions still end, no connection is left holding the upstream', async () => {
  // The sequence of postgres.js' own suite ("Prepared transaction", then "Uncaught transaction
  // request errors bubbles to transaction"): the refused PREPARE TRANSACTION ran in a statement
  // the sandbox injects into the client's cycle; its error skipped that statement's Close, the
  // next injected COMMIT/ROLLBACK failed with 42P05, and the connection stayed in its transaction.
  const sql = postgres(sb.info.url, { max: 1 });
  const other = postgres(sb.info.url, { max: 1 });
  await inTest('2pc then transactions', async () => {
    await expect(
      sql.begin(async (tx) => {
        await tx`select 1`;
        await tx.prepare('tx1');
      }),
    ).rejects.toMatchObject({ code: '55000' });
    const code = await sql
      .begin((tx) => [tx`select wat`, tx`select current_setting('application_name') as x, ${1} as a`])
      .then(() => 'no error', (e: { code?: string }) => e.code);
    expect(code).toBe('42703');
    const [row] = await sql.begin((tx) => [tx`select ${2}::int as b`]);
    expect(row[0].b).toBe(2);
    // Another connection gets the upstream at once (before the fix: JESTPG_LOCK_WAIT).
    expect((await other`select 3 as c`)[0].c).toBe(3);
  });
  await sql.end();
  await other.end();
});

test('every startup parameter is a setting, reported back like a server does; no application_name means empty', async () => {
  const statuses: Record<string, string> = {};
  const sql = postgres(sb.info.url, {
    max: 1,
    connection: { application_name: 'reported', work_mem: '7MB', 'my.custom': 'yes' },
    onparameter: (k: string, v: string) => (statuses[k] = v),
  });
  const plain = await connect();
  await inTest('startup parameters', async () => {
    const [row] = await sql`SELECT current_setting('work_mem') AS wm, current_setting('my.custom') AS c, current_setting('application_name') AS app`;
    expect(row).toEqual({ wm: '7MB', c: 'yes', app: 'reported' });
    expect((await plain.query("SELECT current_setting('application_name') AS app, current_setting('work_mem') AS wm")).rows[0]).toEqual({ app: '', wm: '4MB' });
  });
  expect(statuses.application_name).toBe('reported');
  await sql.end();
  await plain.end();
});

test('a client that connects and hangs up at once is closed quietly', async () => {
  const reply = await raw(sb.info.port, [Buffer.from([0x58, 0, 0, 0, 4])]);
  expect(reply.length).toBe(0);
});

test('deferred constraints are checked at a client\'s COMMIT, as in Postgres: a violation fails it, the transaction is rolled back, the table can be dropped', async () => {
  const c = await connect();
  const sql = postgres(sb.info.url, { max: 1, onnotice: () => undefined });
  await inTest('deferred', async () => {
    await c.query('CREATE TABLE deferred_t (x int CONSTRAINT deferred_u UNIQUE DEFERRABLE INITIALLY DEFERRED, y int CONSTRAINT deferred_imm UNIQUE DEFERRABLE INITIALLY IMMEDIATE)');
    await c.query('BEGIN');
    await c.query('INSERT INTO deferred_t (x) VALUES (1)');
    await c.query('INSERT INTO deferred_t (x) VALUES (1)'); // deferred: no error yet
    await expect(c.query('COMMIT')).rejects.toMatchObject({ code: '23505', constraint: 'deferred_u' });
    // Over: rolled back, the connection outside a transaction (a real server answers the same).
    expect((await c.query('SELECT count(*)::int AS n FROM deferred_t')).rows[0].n).toBe(0);
    await expect(c.query('COMMIT')).resolves.toMatchObject({ command: 'COMMIT' }); // WARNING: no transaction in progress
    // Each constraint keeps its own mode afterwards: deferred_u is still deferred, deferred_imm immediate.
    await c.query('BEGIN');
    await c.query('INSERT INTO deferred_t (x) VALUES (2), (2)');
    await expect(c.query('INSERT INTO deferred_t (y) VALUES (5), (5)')).rejects.toMatchObject({ code: '23505', constraint: 'deferred_imm' });
    await c.query('ROLLBACK');
    // postgres.js' own test "Does not try rollback when commit errors" (COMMIT through the extended protocol).
    const code = await sql
      .begin('isolation level serializable', async (tx) => {
        await tx`insert into deferred_t (x) values(1)`;
        await tx`insert into deferred_t (x) values(1)`;
      })
      .then(() => 'committed', (e: { code?: string }) => e.code);
    expect(code).toBe('23505');
    await c.query('DROP TABLE deferred_t'); // no pending trigger events left
  });
  await sql.end();
  await c.end();
});
