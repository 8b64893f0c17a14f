/**
 * Injected faults (issue 11, "Failures end the run loudly"): whatever fails or stalls while a run
 * is set up, Jest exits non-zero with the fault's JESTPG_ code on stderr, and nothing of the run
 * is left — no postgres or reaper process, no cluster dir or run dir (nor lock file), and on the
 * external server no database and no backend. Every fault on every server path it applies to:
 * embedded without cacheDir, embedded with cacheDir, JEST_PG_URL (one external server, shared).
 *
 * The runs are independent (each has its own private TMPDIR/data root, and on the external server
 * its own role and database prefix), so they run a few at a time; each case's leftovers are
 * measured right after its run, and asserted in its own test below.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packDataDir, readPack, unpackDataDir } from '../../src/server/cache';
import { capture, externalServer, waitFor, type ExternalServer } from '../helpers/e2e';
import { cleanup, privateDir, ROOT, runJest, settle, type JestRun } from '../helpers/jest-run';
import { findBinaries } from '../../src/server/binaries';

type ServerPath = 'embedded' | 'embedded+cacheDir' | 'JEST_PG_URL';
const ALL: ServerPath[] = ['embedded', 'embedded+cacheDir', 'JEST_PG_URL'];
const EMBEDDED: ServerPath[] = ['embedded', 'embedded+cacheDir'];

/** Everything a fault needs that the test prepares once (see beforeAll). */
interface World {
  server: ExternalServer;
  /** A copy of the package whose reaper cannot start (a damaged installation). */
  damagedPkg: string;
  /** binDirs whose initdb fails / never finishes (postgres itself is the real one). */
  initdbFails: string;
  initdbHangs: string;
  /** A TCP port nothing listens on, and one held by a server that accepts and never answers. */
  closedPort: number;
  silentPort: number;
}

interface Fault {
  name: string;
  paths: ServerPath[];
  /** The `pg` options (the case's prefix and cacheDir are added). */
  pg: (w: World) => Record<string, unknown>;
  env?: (w: World) => Record<string, string>;
  /** JEST_PG_URL is a server other than the shared one (unreachable cases), or the role lacks CREATEDB. */
  url?: (w: World, role: string) => string;
  noCreateDb?: boolean;
  envOnly?: boolean;
  /** Run `jest-environment-pg run -- node -e 0` (the CLI, through startSandbox) instead of Jest. */
  cli?: boolean;
  code: string;
  message: RegExp;
  /**
   * Found before the tests (the run stops there) or after them (the run fails at its end): the
   * global setup does not wait for the reaper's boot, so which one depends on how fast it is.
   */
  testsMayRun?: boolean;
}

const FAULTS: Fault[] = [
  {
    name: 'failing SQL migration',
    paths: ALL,
    pg: () => ({ migrations: './migrations-broken' }),
    code: 'JESTPG_MIGRATION_FAILED',
    message: /Migration failed in migrations-broken\/002_broken\.sql:2:13: relation "itemz" does not exist/,
  },
  {
    name: 'failing JS module migration',
    paths: ALL,
    pg: () => ({ migrations: './module-broken.js' }),
    code: 'JESTPG_MIGRATION_FAILED',
    message: /Migration failed in module-broken\.js: relation "itemz" does not exist/,
  },
  {
    name: 'failing command migration',
    paths: ALL,
    pg: () => ({ migrations: { command: 'node command-broken.js' } }),
    code: 'JESTPG_MIGRATION_FAILED',
    message: /Migration failed in command "node command-broken\.js" .*: it exited with code 3\. Its output:\n(.*\n)*.*relation "itemz" does not exist/,
  },
  {
    // Without the ref'd handle this exited 0 at once; without the step bound it would hang.
    name: 'migration module that never settles',
    paths: ALL,
    pg: () => ({ migrations: './module-hang.js' }),
    env: () => ({ JEST_PG_MIGRATIONS_TIMEOUT_MS: '3000' }),
    code: 'JESTPG_SETUP_TIMEOUT',
    message: /building the template \(migrations\) did not finish within 3000 ms, so it was stopped .* If it is only slow, raise JEST_PG_MIGRATIONS_TIMEOUT_MS/,
  },
  {
    name: 'migration module calls process.exit(0)',
    paths: ALL,
    pg: () => ({ migrations: './module-exit.js' }),
    code: 'JESTPG_SETUP_INTERRUPTED',
    message: /The process exited \(code 0\) while jest-environment-pg was still setting up \(setting up the PostgreSQL run, during: .*building the template \(migrations\)/,
  },
  {
    name: 'initdb fails',
    paths: EMBEDDED,
    pg: (w) => ({ migrations: './migrations-ok', binDir: w.initdbFails }),
    code: 'JESTPG_INITDB_FAILED',
    message: /initdb failed while creating the throwaway cluster[^]*No space left on device \(simulated\)/,
  },
  {
    name: 'initdb never finishes',
    paths: ['embedded'],
    pg: (w) => ({ migrations: './migrations-ok', binDir: w.initdbHangs }),
    // Only finding the binaries (no initdb) comes before: 5 s is plenty on a loaded machine.
    env: () => ({ JEST_PG_SETUP_TIMEOUT_MS: '5000' }),
    code: 'JESTPG_SETUP_TIMEOUT',
    message: /initdb did not finish within 5000 ms, so it was stopped .* If it is only slow, raise JEST_PG_SETUP_TIMEOUT_MS/,
  },
  {
    name: 'server unreachable (JEST_PG_URL to a closed port)',
    paths: ['JEST_PG_URL'],
    pg: () => ({ migrations: './migrations-ok' }),
    url: (w) => `postgres://postgres:pw@127.0.0.1:${w.closedPort}/postgres`,
    code: 'JESTPG_SERVER_UNREACHABLE',
    message: /Could not connect to the PostgreSQL server at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/postgres: connecting to 127\.0\.0\.1:\d+: connect ECONNREFUSED/,
  },
  {
    name: 'port in use by something that is not Postgres (accepts, never answers)',
    paths: ['JEST_PG_URL'],
    pg: () => ({ migrations: './migrations-ok' }),
    url: (w) => `postgres://postgres:pw@127.0.0.1:${w.silentPort}/postgres`,
    code: 'JESTPG_SERVER_UNREACHABLE',
    message: /Could not connect to the PostgreSQL server at .*: timed out after \d+ ms starting up/,
  },
  {
    name: 'role without CREATEDB',
    paths: ['JEST_PG_URL'],
    pg: () => ({ migrations: './migrations-ok' }),
    noCreateDb: true,
    code: 'JESTPG_NO_CREATEDB',
    message: /Role "f\d+" at .* may not create databases/,
  },
  {
    name: 'the reaper fails to start (damaged installation)',
    paths: ALL,
    pg: () => ({ migrations: './migrations-ok' }),
    env: (w) => ({ FAULTS_PKG: w.damagedPkg }),
    code: 'JESTPG_REAPER_FAILED',
    message: /The reaper process did not start: it exited with code 1 before taking the run's lease \(its stderr: Error: simulated: the reaper is damaged\)/,
    testsMayRun: true,
  },
  {
    name: 'failing SQL migration, environment-only mode (no global setup; 2 workers)',
    paths: ['embedded'],
    pg: () => ({ migrations: './migrations-broken' }),
    envOnly: true,
    code: 'JESTPG_MIGRATION_FAILED',
    message: /Migration failed in migrations-broken\/002_broken\.sql:2:13: relation "itemz" does not exist/,
  },
  // The same guarantee outside Jest: the CLI's `run`, which sets up through startSandbox.
  {
    name: 'CLI run: failing SQL migration',
    paths: EMBEDDED,
    pg: () => ({ migrations: './migrations-broken' }),
    cli: true,
    code: 'JESTPG_MIGRATION_FAILED',
    message: /jest-environment-pg: could not start the sandbox: JESTPG_MIGRATION_FAILED: Migration failed in migrations-broken\/002_broken\.sql:2:13/,
  },
  {
    name: 'CLI run: migration module that never settles',
    paths: ['JEST_PG_URL'],
    pg: () => ({ migrations: './module-hang.js' }),
    env: () => ({ JEST_PG_MIGRATIONS_TIMEOUT_MS: '3000' }),
    cli: true,
    code: 'JESTPG_SETUP_TIMEOUT',
    message: /could not start the sandbox: JESTPG_SETUP_TIMEOUT: .*building the template \(migrations\) did not finish within 3000 ms/,
  },
  {
    name: 'CLI run: migration module calls process.exit(0)',
    paths: ['embedded'],
    pg: () => ({ migrations: './module-exit.js' }),
    cli: true,
    code: 'JESTPG_SETUP_INTERRUPTED',
    message: /The process exited \(code 0\) while jest-environment-pg was still setting up \(starting the sandbox; setting up the PostgreSQL run, during: .*building the template \(migrations\)/,
  },
];

interface Outcome {
  run: JestRun;
  ms: number;
  leftovers: { files: string[]; processes: string[] };
  /** On the external server: the case's databases that are not complete templates, and its backends. */
  databases?: string[];
  backends?: string[];
}

interface Case {
  id: number;
  fault: Fault;
  path: ServerPath;
  outcome?: Promise<Outcome>;
}

const CASES: Case[] = FAULTS.flatMap((fault) => fault.paths.map((p) => ({ fault, path: p }))).map((c, i) => ({ ...c, id: i + 1 }));

const dirs: string[] = [];
let world: World;
let stopSilent: (() => void) | undefined;

/** The external server's view of a case: databases with its prefix that are not complete templates, backends of its role. */
async function serverState(id: number): Promise<{ databases: string[]; backends: string[] }> {
  const databases = (
    await world.server.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE NOT datistemplate AND left(datname, length($1)) = $1`, [`f${id}_`])
  ).map((r) => r.datname);
  const backends = (await world.server.query<{ pid: number; application_name: string }>('SELECT pid, application_name FROM pg_stat_activity WHERE usename = $1', [`f${id}`])).map(
    (r) => `${r.pid} ${r.application_name}`,
  );
  return { databases, backends };
}

async function runCase(c: Case): Promise<Outcome> {
  const { fault } = c;
  const role = `f${c.id}`;
  const pg: Record<string, unknown> = { ...fault.pg(world), prefix: role };
  const env: Record<string, string | undefined> = { JEST_PG_URL: undefined, JEST_PG_SETUP_TIMEOUT_MS: undefined, JEST_PG_MIGRATIONS_TIMEOUT_MS: undefined, ...fault.env?.(world) };
  if (c.path === 'embedded+cacheDir') {
    const cache = privateDir();
    dirs.push(cache);
    pg.cacheDir = cache;
  } else if (c.path === 'embedded') {
    pg.cacheDir = false;
  } else {
    const port = world.server.cluster.port;
    if (!fault.url) await world.server.query(`CREATE ROLE ${role} LOGIN ${fault.noCreateDb ? 'NOCREATEDB' : 'CREATEDB'} PASSWORD 'pw'`);
    env.JEST_PG_URL = fault.url ? fault.url(world, role) : `postgres://${role}:pw@127.0.0.1:${port}/postgres`;
  }
  if (fault.envOnly) env.FAULTS_ENV_ONLY = '1';
  env.FAULTS_PG = JSON.stringify(pg);
  const t0 = Date.now();
  const run = fault.cli ? await runCli(pg, env) : await runJest('faults', { args: fault.envOnly ? ['--maxWorkers=2'] : [], env, timeoutMs: 60_000 });
  const ms = Date.now() - t0;
  dirs.push(run.sandboxDir);
  capture(`fault ${c.id} ${fault.name.replace(/\//g, '-')} (${c.path})`, run);
  // The reaper (a process.exit in the middle) or the lock files' remover finish within a second or so.
  const leftovers = await settle(run.sandboxDir, 10_000);
  if (c.path !== 'JEST_PG_URL' || fault.url) return { run, ms, leftovers };
  // Backends end when their client process is gone: the server notices within moments.
  let state = await serverState(c.id);
  await waitFor('the case’s backends to end', async () => ((state = await serverState(c.id)).backends.length === 0 ? true : undefined), 5000).catch(() => undefined);
  return { run, ms, leftovers, ...state };
}

/** `jest-environment-pg run [flags for pg] -- node -e 0` in the fixture, every artifact in a private dir (as runJest does). */
function runCli(pg: Record<string, unknown>, extra: Record<string, string | undefined>): Promise<JestRun> {
  const flags: string[] = ['--prefix', String(pg.prefix), '--migrations', String(pg.migrations)];
  if (pg.cacheDir === false) flags.push('--no-cache');
  else if (typeof pg.cacheDir === 'string') flags.push('--cache-dir', pg.cacheDir);
  const sandboxDir = privateDir();
  const env: NodeJS.ProcessEnv = { ...process.env, TMPDIR: sandboxDir, JEST_PG_DATA_ROOT: sandboxDir, FORCE_COLOR: '0' };
  for (const k of ['JEST_WORKER_ID', 'JEST_PG_MANIFEST', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE', 'NODE_OPTIONS']) delete env[k];
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  const bin = path.join(ROOT, 'bin', 'jest-environment-pg.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'run', ...flags, '--', process.execPath, '-e', '0'], { cwd: path.join(ROOT, 'fixtures', 'faults'), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, output: stdout + stderr, sandboxDir });
    });
  });
}

/** At most `n` at a time, in order. */
function pool(tasks: (() => Promise<unknown>)[], n: number): void {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) await tasks[next++]().catch(() => undefined);
  };
  for (let i = 0; i < n; i++) void worker();
}

beforeAll(async () => {
  if (!fs.existsSync(path.join(ROOT, 'dist', 'run', 'reaper-main.js'))) throw new Error('run `npm run build` first: these tests run Jest on the built package');
  const server = await externalServer();
  const scratch = privateDir();
  dirs.push(scratch);

  // A damaged installation: the package as built, but its reaper script throws when loaded.
  const damagedPkg = path.join(scratch, 'pkg');
  fs.mkdirSync(damagedPkg);
  for (const f of ['dist', 'package.json', 'global-setup.js', 'global-teardown.js']) fs.cpSync(path.join(ROOT, f), path.join(damagedPkg, f), { recursive: true });
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(damagedPkg, 'node_modules'));
  fs.writeFileSync(path.join(damagedPkg, 'dist', 'run', 'reaper-main.js'), "// A damaged installation.\nthrow new Error('simulated: the reaper is damaged');\n");

  // binDirs with the real postgres and an initdb that fails, or never finishes.
  const real = (await findBinaries({})).binDir;
  const binDir = (name: string, initdb: string) => {
    const d = path.join(scratch, name);
    fs.mkdirSync(d);
    // A wrapper, not a symlink: the server user must be able to reach it even when the real
    // binaries sit in a checkout under a private directory (it is never started: initdb fails first).
    fs.writeFileSync(path.join(d, 'postgres'), `#!/bin/sh\nexec '${path.join(real, 'postgres')}' "$@"\n`, { mode: 0o755 });
    fs.writeFileSync(path.join(d, 'initdb'), `#!/bin/sh\n${initdb}\n`, { mode: 0o755 });
    return d;
  };
  const initdbFails = binDir('bin-initdb-fails', 'echo "initdb: error: could not create directory: No space left on device (simulated)" >&2\nexit 1');
  const initdbHangs = binDir('bin-initdb-hangs', 'while :; do sleep 1; done');

  // A port nothing listens on (taken and released), and a listener that accepts and never answers.
  const net = await import('node:net');
  const listen = () =>
    new Promise<import('node:net').Server>((resolve) => {
      const s = net.createServer((sock) => sock.on('error', () => undefined));
      s.listen(0, '127.0.0.1', () => resolve(s));
    });
  const closed = await listen();
  const closedPort = (closed.address() as import('node:net').AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const silent = await listen();
  const silentPort = (silent.address() as import('node:net').AddressInfo).port;
  const sockets = new Set<import('node:net').Socket>();
  silent.on('connection', (s) => sockets.add(s));
  stopSilent = () => {
    for (const s of sockets) s.destroy();
    silent.close();
  };

  world = { server, damagedPkg, initdbFails, initdbHangs, closedPort, silentPort };
  // The slow ones (a connect timeout, the step bounds) first; then the rest, a few at a time.
  const slow = (c: Case) => (/never|not Postgres/.test(c.fault.name) ? 0 : 1);
  const ordered = [...CASES].sort((a, b) => slow(a) - slow(b));
  // The damaged cache entries first: three runs one after the other (fill the cache, then two damages).
  const tasks: (() => Promise<unknown>)[] = [() => corruptCache()];
  for (const c of ordered) {
    let start!: () => void;
    const started = new Promise<void>((r) => (start = r));
    c.outcome = started.then(() => runCase(c));
    c.outcome.catch(() => undefined);
    tasks.push(() => (start(), c.outcome!));
  }
  pool(tasks, 6);
}, 30_000);

afterAll(async () => {
  await Promise.allSettled([...CASES.map((c) => c.outcome), corrupt].filter(Boolean) as Promise<unknown>[]);
  if (process.env.JESTPG_E2E_CAPTURE) await writeTable(process.env.JESTPG_E2E_CAPTURE);
  stopSilent?.();
  await world?.server.stop();
  dirs.forEach(cleanup);
}, 120_000);

describe.each(CASES.map((c) => [`${c.fault.name} (${c.path})`, c] as const))('%s', (_name, c) => {
  test(`exits non-zero with ${c.fault.code} on stderr, and leaves nothing behind`, async () => {
    const o = await c.outcome!;
    expect(o.run.signal).toBeNull();
    expect(o.run.code).toBe(1);
    expect(o.run.stderr).toContain(c.fault.code);
    expect(o.run.stderr).toMatch(c.fault.message);
    // No test (nor the CLI's command) ran: the failure happened before any of them.
    if (!c.fault.testsMayRun) expect(o.run.output).not.toMatch(/Tests:.*passed|sandbox ready/);
    expect(o.leftovers).toEqual({ files: [], processes: [] });
    if (o.databases) {
      expect(o.databases).toEqual([]);
      expect(o.backends).toEqual([]);
    }
  }, 120_000);
});

// ---------------------------------------------------------------------------------------------
// A damaged cache entry is not a failure: it is deleted with a note, the run goes on without it
// (as a cold start) and saves a fresh entry in its place.

interface CorruptOutcome {
  how: string;
  run: JestRun;
  ms: number;
  entry: string;
  leftovers: { files: string[]; processes: string[] };
  /** After the run: the entry is back and reads as valid. */
  entryValid: boolean;
}
let corrupt: Promise<CorruptOutcome[]> | undefined;

function corruptCache(): Promise<CorruptOutcome[]> {
  corrupt = (async () => {
    const cacheDir = privateDir();
    dirs.push(cacheDir);
    const pg = { migrations: './migrations-ok', prefix: 'fcache' };
    const run = (dir: string) => runJest('faults', { env: { JEST_PG_URL: undefined, FAULTS_PG: JSON.stringify({ ...pg, cacheDir: dir }) }, timeoutMs: 60_000 });
    const first = await run(cacheDir);
    dirs.push(first.sandboxDir);
    capture('fault corrupt cache: the run that fills it', first);
    if (first.code !== 0) throw new Error(`the run that fills the cache failed:\n${first.output}`);
    const entry = fs.readdirSync(cacheDir).find((f) => f.endsWith('.pgdata') && !f.includes('-base.'));
    if (!entry) throw new Error(`no cache entry was written in ${cacheDir}: ${fs.readdirSync(cacheDir).join(', ')}`);

    const damage: [string, (file: string) => Promise<void>][] = [
      [
        'bytes of the entry overwritten',
        async (file) => {
          const b = fs.readFileSync(file);
          b.fill(0x5a, b.length >> 1, (b.length >> 1) + 4096);
          fs.writeFileSync(file, b);
        },
      ],
      [
        'a well-formed entry of a cluster that cannot start (global/pg_control missing)',
        async (file) => {
          const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-unpacked-'));
          try {
            const data = path.join(tmp, 'data');
            unpackDataDir(readPack(file)!, data);
            fs.rmSync(path.join(data, 'global', 'pg_control'));
            fs.rmSync(file);
            await packDataDir(data, file);
          } finally {
            fs.rmSync(tmp, { recursive: true, force: true });
          }
        },
      ],
    ];
    return Promise.all(
      damage.map(async ([how, hurt]) => {
        const dir = privateDir();
        dirs.push(dir);
        fs.copyFileSync(path.join(cacheDir, entry), path.join(dir, entry));
        await hurt(path.join(dir, entry));
        const t0 = Date.now();
        const r = await run(dir);
        const ms = Date.now() - t0;
        dirs.push(r.sandboxDir);
        capture(`fault corrupt cache: ${how.replace(/\//g, '-')}`, r);
        const leftovers = await settle(r.sandboxDir, 10_000);
        let entryValid = false;
        try {
          entryValid = readPack(path.join(dir, entry)) !== undefined;
        } catch {
          entryValid = false;
        }
        return { how, run: r, ms, entry, leftovers, entryValid };
      }),
    );
  })();
  return corrupt;
}

describe('a damaged cache entry (embedded+cacheDir)', () => {
  test.each([0, 1])('case %i: deleted with a note on stderr; the run passes, saves a fresh entry, leaves nothing behind', async (i) => {
    const o = (await corrupt!)[i];
    expect(o.run.code).toBe(0);
    expect(o.run.output).toMatch(/Tests:\s+2 passed, 2 total/);
    expect(o.run.stderr).toMatch(
      i === 0
        ? /jest-environment-pg: the cache entry \S+\.pgdata: (checksum mismatch|length mismatch|entries do not match the data); it was deleted and this run started without it \(a fresh entry is saved\)\./
        : /jest-environment-pg: the server did not start from the cache entry \S+\.pgdata \(.*\); it was deleted and this run started without it \(a fresh entry is saved\)\./,
    );
    expect(o.run.stderr).not.toMatch(/JESTPG_/);
    expect(o.entryValid).toBe(true);
    expect(o.leftovers).toEqual({ files: [], processes: [] });
  }, 120_000);
});

/** With JESTPG_E2E_CAPTURE=<dir>: the fault table as measured, as <dir>/faults.md. */
async function writeTable(dir: string): Promise<void> {
  const left = (l: { files: string[]; processes: string[] }, o?: { databases?: string[]; backends?: string[] }) => {
    const all = [...l.files, ...l.processes, ...(o?.databases ?? []), ...(o?.backends ?? [])];
    const checked = o?.databases ? 'no process, dir, database or backend' : 'no process or dir';
    return all.length ? all.join(', ') : checked;
  };
  const rows = ['| fault | server | exit | stderr | leftovers | s |', '| --- | --- | --- | --- | --- | --- |'];
  for (const c of CASES) {
    const o = await c.outcome!.catch(() => undefined);
    if (!o) continue;
    const code = /JESTPG_[A-Z_]+/.exec(o.run.stderr)?.[0] ?? '(none)';
    const msg = o.run.stderr.match(c.fault.message)?.[0]?.split('\n')[0] ?? '(message not found)';
    rows.push(`| ${c.fault.name} | ${c.path} | ${o.run.code} | \`${code}\`: ${msg.replace(/\|/g, '\\|')} | ${left(o.leftovers, o)} | ${(o.ms / 1000).toFixed(1)} |`);
  }
  for (const o of (await corrupt?.catch(() => undefined)) ?? []) {
    const note = /jest-environment-pg: the (cache entry|server did not start)[^\n]*/.exec(o.run.stderr)?.[0] ?? '(no note)';
    rows.push(`| corrupt cache entry: ${o.how} | embedded+cacheDir | ${o.run.code} | ${note.replace(/\|/g, '\\|')} | ${left(o.leftovers)}; entry rewritten: ${o.entryValid} | ${(o.ms / 1000).toFixed(1)} |`);
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'faults.md'), rows.join('\n') + '\n');
}
