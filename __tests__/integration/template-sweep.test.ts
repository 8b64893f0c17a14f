/**
 * Old templates on a persistent server are swept at the start of a run: the run's own and the
 * `keepTemplates` most recently used others are kept, a template a live run uses (its lease
 * connection holds it) is never dropped, half-built ones are, and nothing that is not provably
 * ours is touched. Asserted on pg_database of a real server.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Client } from 'pg';
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { ident, literal } from '../../src/util/names';
import { ensureWorkerDatabase, startRun, teardownRun, type RunManifest } from '../../src/run/run';
import { ensureTemplateDetailed, useLockKey } from '../../src/schema/template';
import { ensureBuilt } from '../helpers/build';
import { stopOnExit } from '../helpers/watchdog';

const PREFIX = 'swp';
let cluster: ClusterInfo;
let dismiss: () => void;
let admin: Client;
let root: string;
const runs: RunManifest[] = [];

beforeAll(async () => {
  ensureBuilt(); // the reaper runs from dist/
  const b = await findBinaries({});
  cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir });
  dismiss = stopOnExit(cluster);
  admin = new Client({ connectionString: cluster.url, application_name: 'template-sweep-test' });
  await admin.connect();
  root = mkdtempSync(path.join(os.tmpdir(), 'jest-pg-sweep-test-'));
}, 60_000);

afterAll(async () => {
  for (const m of runs) await teardownRun(m).catch(() => undefined);
  await admin?.end().catch(() => undefined);
  if (cluster) await stopCluster(cluster);
  dismiss?.();
  if (root) rmSync(root, { recursive: true, force: true });
}, 60_000);

/** A migrations directory of its own (so its own template). */
function migrations(n: number): string {
  const dir = path.join(root, `m${n}`);
  require('node:fs').mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, '001.sql'), `CREATE TABLE t${n} (id int);`);
  return dir;
}

async function template(n: number, usedAt: number | null): Promise<string> {
  const { name } = await ensureTemplateDetailed(cluster.url, { prefix: PREFIX, migrations: migrations(n), versionNum: cluster.versionNum });
  await stamp(name, usedAt);
  return name;
}

/** Set when the template was last used (null: a template made before stamps existed). */
async function stamp(name: string, usedAt: number | null): Promise<void> {
  await admin.query(`COMMENT ON DATABASE ${ident(name)} IS ${literal(`jest-environment-pg template${usedAt === null ? '' : ` used=${usedAt}`}`)}`);
}

async function databases(): Promise<string[]> {
  const r = await admin.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE 'swp\\_tpl\\_%' ORDER BY datname`);
  return r.rows.map((x) => x.datname);
}

async function start(n: number, keepTemplates: number): Promise<RunManifest> {
  const m = await startRun({ server: cluster.url, prefix: PREFIX, migrations: migrations(n), keepTemplates, cacheDir: false }, process.pid);
  runs.push(m);
  return m;
}

const sorted = (xs: string[]) => [...xs].sort();

/** application_name of every session holding the template's "in use" lock. */
async function holders(name: string): Promise<string[]> {
  const r = await admin.query<{ app: string }>(
    `SELECT a.application_name AS app FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND ((l.classid::int8 << 32) | l.objid::int8) = $1::int8
      ORDER BY 1`,
    [useLockKey(name)],
  );
  return r.rows.map((x) => x.app);
}

async function until<T>(probe: () => Promise<T>, ok: (v: T) => boolean, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  let v = await probe();
  while (!ok(v) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    v = await probe();
  }
  return v;
}

test('keep the run’s own and the N most recently used; never one a live run uses; only ours', async () => {
  const t1 = await template(1, 100);
  const t2 = await template(2, 200);
  const t3 = await template(3, 300);
  const t4 = await template(4, 400);
  const legacy = await template(6, null);
  // A build that crashed (ours, never marked complete), and two databases that are not ours.
  const crashed = `${PREFIX}_tpl_00000000000000aa`;
  await admin.query(`CREATE DATABASE ${ident(crashed)}`);
  await admin.query(`COMMENT ON DATABASE ${ident(crashed)} IS 'jest-environment-pg template'`);
  const notMarked = `${PREFIX}_tpl_00000000000000bb`;
  await admin.query(`CREATE DATABASE ${ident(notMarked)}`);
  const otherName = `${PREFIX}_tpl_mine`;
  await admin.query(`CREATE DATABASE ${ident(otherName)}`);
  await admin.query(`COMMENT ON DATABASE ${ident(otherName)} IS 'jest-environment-pg template used=1'`);
  const notOurs = [notMarked, otherName];

  // Run 1 uses the oldest template and keeps 2 others: the two most recently used.
  const r1 = await start(1, 2);
  expect(r1.templateDb).toBe(t1);
  expect(sorted(r1.swept?.templates ?? [])).toEqual(sorted([t2, legacy, crashed]));
  expect(await databases()).toEqual(sorted([t1, t3, t4, ...notOurs]));

  // Run 1's reaper holds its template for the rest of the run (the main process let go of it).
  expect(await until(() => holders(t1), (h) => h.length === 1 && h[0] === 'jest-environment-pg reaper')).toEqual(['jest-environment-pg reaper']);

  // While run 1 lives, its template is the least recently used; run 2 keeps none besides its own.
  await stamp(t1, 1);
  const legacy2 = await template(7, null); // made by a version without stamps: no holder to ask
  const r2 = await start(5, 0);
  expect(sorted(r2.swept?.templates ?? [])).toEqual(sorted([t3, t4]));
  expect(await databases()).toEqual(sorted([t1, r2.templateDb, legacy2, ...notOurs]));
  // Run 1 can still clone its template.
  const w = await ensureWorkerDatabase(r1, '1');
  expect(w.created).toBe(true);

  // Once runs 1 and 2 are over, the next run sweeps what they kept alive.
  await teardownRun(r1);
  await teardownRun(r2);
  const r3 = await start(5, 0);
  expect(sorted(r3.swept?.templates ?? [])).toEqual(sorted([t1, legacy2]));
  expect(await databases()).toEqual(sorted([r3.templateDb, ...notOurs]));
}, 120_000);

test("a run's start sweeps the databases of dead runs (on its lease's connection), reports them, and keeps a live run's", async () => {
  const { marker } = await import('../../src/util/names');
  const { acquireLease } = await import('../../src/run/lease');
  const mk = (name: string, runId: string) => admin.query(`CREATE DATABASE ${ident(name)}`).then(() => admin.query(`COMMENT ON DATABASE ${ident(name)} IS ${literal(marker(runId))}`));
  await mk('swp_0dead0ff_w1', '0dead0ff');
  await mk('swp_0dead0ff_w2', '0dead0ff');
  await mk('swp_11fe11fe_w1', '11fe11fe');
  const live = new Client({ connectionString: cluster.url });
  await live.connect();
  try {
    await acquireLease(live, '11fe11fe');
    const m = await start(90, 1);
    expect(m.swept).toMatchObject({ dropped: ['swp_0dead0ff_w1', 'swp_0dead0ff_w2'], deadRuns: ['0dead0ff'] });
    const left = (await admin.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE 'swp\\_%\\_w_' ORDER BY 1`)).rows.map((r) => r.datname);
    expect(left).toEqual(['swp_11fe11fe_w1']);
  } finally {
    await live.end();
    await admin.query('DROP DATABASE IF EXISTS swp_11fe11fe_w1');
  }
});
