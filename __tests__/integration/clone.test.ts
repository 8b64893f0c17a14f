/**
 * Worker databases are true copies of the template: a migration's `ALTER DATABASE … SET`,
 * `ALTER ROLE … IN DATABASE … SET`, owner, privileges and comment reach every clone. Asserted
 * through the sandbox (SHOW) and on the server's catalogs, template against clone.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import { withClient, withDatabase } from '../../src/util/admin';
import { startSandbox, type SandboxHandle } from '../../src/sandbox/api';
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { parseMarker } from '../../src/util/names';
import { rebuildWorkerDatabase, readManifest } from '../../src/run/run';
import { ensureBuilt } from '../helpers/build';
import { stopOnExit } from '../helpers/watchdog';

let cluster: ClusterInfo;
let dismiss: () => void;
let dir: string;
let sb: SandboxHandle | undefined;
const clients: Client[] = [];

const MIGRATION = `
CREATE TABLE items (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
DO $$ BEGIN
  EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'Pacific/Chatham');
  EXECUTE format('ALTER DATABASE %I SET search_path TO "$user", public, "Odd ""Schema"""', current_database());
  EXECUTE format('ALTER DATABASE %I SET myapp.tenant TO %L', current_database(), 'it''s me');
  EXECUTE format('ALTER ROLE %I IN DATABASE %I SET work_mem TO %L', current_user, current_database(), '7MB');
  EXECUTE format('ALTER ROLE app_reader IN DATABASE %I SET statement_timeout TO %L', current_database(), '4s');
  EXECUTE format('ALTER DATABASE %I OWNER TO app_owner', current_database());
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
  EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO app_reader', current_database());
  EXECUTE format('COMMENT ON DATABASE %I IS %L', current_database(), 'The app''s database');
END $$;
`;

beforeAll(async () => {
  ensureBuilt(); // startSandbox spawns the reaper from dist/
  const b = await findBinaries({});
  cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir });
  dismiss = stopOnExit(cluster);
  await withClient(cluster.url, async (c) => {
    await c.query('CREATE ROLE app_owner NOLOGIN');
    await c.query("CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw'");
  });
  dir = mkdtempSync(path.join(os.tmpdir(), 'jest-pg-clone-test-'));
  writeFileSync(path.join(dir, '001_settings.sql'), MIGRATION);
  sb = await startSandbox({ server: cluster.url, migrations: dir, prefix: 'clonetest', cacheDir: false, label: 'clone.test' });
}, 90_000);

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await sb?.close();
  if (cluster) await stopCluster(cluster);
  dismiss?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

async function connect(url: string): Promise<Client> {
  const c = new Client({ connectionString: url });
  c.on('error', () => undefined);
  await c.connect();
  clients.push(c);
  return c;
}

async function shown(c: Client, name: string): Promise<string> {
  return Object.values((await c.query(`SHOW ${name}`)).rows[0] as Record<string, string>)[0];
}

interface Shape {
  owner: string;
  acl: string[] | null;
  settings: { role: string | null; config: string[] }[];
  comment: string | null;
}

async function shape(database: string): Promise<Shape> {
  return withClient(cluster.url, async (c) => {
    const r = await c.query<Shape>(
      `SELECT pg_get_userbyid(d.datdba) AS owner, d.datacl::text[] AS acl, shobj_description(d.oid, 'pg_database') AS comment,
              coalesce((SELECT json_agg(json_build_object('role', r.rolname, 'config', s.setconfig) ORDER BY r.rolname NULLS FIRST)
                 FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid), '[]') AS settings
         FROM pg_database d WHERE datname = $1`,
      [database],
    );
    return r.rows[0];
  });
}

test('a test through the sandbox sees the database settings a migration made on the template', async () => {
  const c = await connect(sb!.url);
  sb!.beginTest('settings');
  try {
    expect(await shown(c, 'timezone')).toBe('Pacific/Chatham');
    expect(await shown(c, 'search_path')).toBe('"$user", public, "Odd ""Schema"""');
    expect(await shown(c, 'myapp.tenant')).toBe("it's me");
    // ALTER ROLE <the server's role> IN DATABASE … SET: the sandbox's upstream logs in as that role.
    expect(await shown(c, 'work_mem')).toBe('7MB');
    // Column defaults render in the database's time zone.
    const at = (await c.query<{ off: string }>("INSERT INTO items DEFAULT VALUES RETURNING to_char(at, 'TZH:TZM') AS off")).rows[0].off;
    expect(['+12:45', '+13:45']).toContain(at);
  } finally {
    expect(await sb!.endTest()).toEqual([]);
  }
});

test('the worker database has the template’s settings, owner, privileges, and its comment after our marker', async () => {
  const manifest = readManifest(process.env.JEST_PG_MANIFEST ?? findManifest());
  const tpl = await shape(manifest.templateDb);
  const clone = await shape(sb!.database);
  expect(clone.owner).toBe('app_owner');
  expect(tpl.owner).toBe('app_owner');
  expect(clone.settings).toEqual(tpl.settings);
  expect(clone.settings.map((s) => s.role)).toEqual([null, 'app_reader', 'postgres']);
  expect(clone.acl).toEqual(tpl.acl);
  expect(clone.acl).toEqual(expect.arrayContaining([expect.stringMatching(/^app_reader=Tc\/app_owner$/)]));
  expect(clone.acl!.some((a) => a.startsWith('='))).toBe(false); // PUBLIC's CONNECT stays revoked
  expect(tpl.comment).toMatch(/^jest-environment-pg template used=\d+\nThe app's database$/);
  expect(clone.comment).toBe(`jest-environment-pg run=${manifest.runId}\nThe app's database`);
  expect(parseMarker(clone.comment)).toEqual({ runId: manifest.runId });
  // A role-specific setting applies to that role's own logins.
  const reader = await connect(
    withDatabase(cluster.url.replace(/\/\/[^@]+@/, '//app_reader:reader-pw@'), sb!.database),
  );
  expect(await shown(reader, 'statement_timeout')).toBe('4s');
  expect(await shown(reader, 'timezone')).toBe('Pacific/Chatham');
  await reader.end();

  // A rebuilt worker database (after a backend went around the sandbox) is a true copy too.
  const spare = `clonetest_${manifest.runId}_wspare`;
  await rebuildWorkerDatabase(manifest, spare);
  const rebuilt = await shape(spare);
  expect({ ...rebuilt, comment: undefined }).toEqual({ ...clone, comment: undefined });
  expect(rebuilt.comment).toBe(clone.comment);
});

/** startSandbox does not set JEST_PG_MANIFEST in the env of the caller unless asked: find ours by its database. */
function findManifest(): string {
  const runId = /^clonetest_([0-9a-f]{8})_w1$/.exec(sb!.database)![1];
  return path.join(os.tmpdir(), `jest-pg-run-${runId}`, 'manifest.json');
}
