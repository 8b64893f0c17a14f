#!/usr/bin/env node
/**
 * Where the fixed time goes: per run (global setup and teardown, with the run's own step laps),
 * per worker (the first file of a worker process: sandbox thread, attach, clone, upstream) and
 * per file (environment setup — BEGIN —, teardown — end of file —), for real Jest runs of this
 * package beside plain Jest on the same files. Every step is stamped by thin wrappers around the
 * same environment and global hooks (bench/suite.js, "timeline"), so nothing here is estimated.
 * Needs `npm run build`.
 *
 *   node bench/fixed.js [--runs N] [--no-cold] [--json] [--compare DIR]
 *
 * Runs, interleaved round-robin, N times each (default 5), medians printed:
 *  - `jest tests/one/one.test.js` (1 file, 10 tests, in band): plain Jest; ours on a running server (JEST_PG_URL);
 *    ours with its own embedded cluster from a warm cache; the same filling an empty cache (cold);
 *  - the 50-test suite (5 files, --maxWorkers=2): plain Jest; ours on a running server.
 * --compare DIR: every case of ours also runs, in the same rounds, with the build of this package
 * in DIR (a checkout with `npm run build` done and this package's node_modules), as `<key>@base`:
 * a before/after on a busy machine.
 */
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { JEST_BIN, cleanEnv, admin, cloneSql, startServer, dist } = require('./common');
const { generate, writeConfig, timelineBase, ONE_FILE } = require('./suite');
const { median } = require('./stats');

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
};
const RUNS = Number(opt('--runs', 5));
const COLD = !argv.includes('--no-cold');
const COMPARE = opt('--compare', undefined) && path.resolve(opt('--compare', undefined));
const now = () => performance.timeOrigin + performance.now();

/** One Jest run with the timeline wrappers; resolves with its stamped events and wall time. */
function runTimed(ctx, { key, size, pkg, env, workers, root }) {
  const timeline = path.join(ctx.root, `timeline-${key}-${++ctx.seq}.jsonl`);
  const config = writeConfig(ctx.project, key, { size, pkgIsolation: pkg ? 'test' : undefined, pgExtra: env.pgExtra, timeline: true });
  const runEnv = { ...timelineBase(pkg, root), BENCH_TIMELINE: timeline, BENCH_ADMIN_URL: ctx.adminUrl, BENCH_TEMPLATE: ctx.template, BENCH_NONCE: `fx${ctx.seq}`, ...env.vars };
  const args = [JEST_BIN, '--ci', '--config', config, '--cacheDirectory', path.join(ctx.root, `jc-${ctx.seq}`), `--maxWorkers=${workers}`, ...(size === 10 ? [ONE_FILE] : [])];
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(process.execPath, args, { cwd: ctx.project, env: cleanEnv({ TMPDIR: ctx.tmp, ...runEnv }), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const t1 = now();
      fs.rmSync(path.join(ctx.root, `jc-${ctx.seq}`), { recursive: true, force: true });
      let events = [];
      try {
        events = fs.readFileSync(timeline, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
        fs.rmSync(timeline, { force: true });
      } catch {
        /* none: failed early */
      }
      if (code !== 0) return reject(new Error(`${key}: jest exited ${code}\n${out.slice(-3000)}`));
      resolve({ t0, t1, events });
    });
  });
}

/** The phases of one run, in ms, from its stamps (each step stamps its start `t` and its `end`). */
function phases({ t0, t1, events }) {
  const first = (ev) => events.find((e) => e.ev === ev);
  const main = first('process');
  const gs = first('gsetup');
  const gt = first('gteardown');
  // Per file, in order within each process: envNew, setup, run_start, run_finish, teardown.
  const byPid = new Map();
  for (const e of events) if (['envNew', 'setup', 'run_start', 'run_finish', 'teardown'].includes(e.ev)) (byPid.get(e.pid) ?? byPid.set(e.pid, []).get(e.pid)).push(e);
  const firstOfWorker = [];
  const laterFiles = [];
  let firstEnv = Infinity;
  let lastTeardown = -Infinity;
  for (const evs of byPid.values()) {
    let n = 0;
    for (let i = 0; i < evs.length; i++) {
      if (evs[i].ev !== 'envNew') continue;
      const [envNew, setup, runStart, runEnd, teardown] = evs.slice(i, i + 5);
      firstEnv = Math.min(firstEnv, envNew.t);
      if (teardown?.ev === 'teardown') lastTeardown = Math.max(lastTeardown, teardown.end);
      const x = {
        setup: setup?.ev === 'setup' ? setup.end - envNew.t : NaN, // constructor + setup (attach, clone, BEGIN)
        tests: runEnd?.ev === 'run_finish' && runStart?.ev === 'run_start' ? runEnd.t - runStart.t : NaN,
        teardown: teardown?.ev === 'teardown' && runEnd ? teardown.end - runEnd.t : NaN, // end of file
      };
      (n++ === 0 ? firstOfWorker : laterFiles).push(x);
    }
  }
  const all = [...firstOfWorker, ...laterFiles];
  // Per test (test_start → test_done, hooks included): the first test of each file, and the rest.
  const firstTests = [];
  const laterTests = [];
  const perPid = new Map();
  for (const e of events) if (e.ev === 'run_start' || e.ev === 'test_start' || e.ev === 'test_done') (perPid.get(e.pid) ?? perPid.set(e.pid, []).get(e.pid)).push(e);
  for (const evs of perPid.values()) {
    let nth = 0;
    let start;
    for (const e of evs) {
      if (e.ev === 'run_start') nth = 0;
      else if (e.ev === 'test_start') start = e.t;
      else if (start !== undefined) {
        (nth++ === 0 ? firstTests : laterTests).push(e.t - start);
        start = undefined;
      }
    }
  }
  return {
    total: t1 - t0,
    nodeBoot: main ? main.t - t0 : NaN,
    jestBoot: main && gs ? gs.t - main.t : NaN,
    gsetupMs: gs ? gs.end - gs.t : NaN,
    toFirstEnv: gs ? firstEnv - gs.end : NaN,
    firstFileSetup: median(firstOfWorker.map((x) => x.setup)),
    laterFileSetup: laterFiles.length ? median(laterFiles.map((x) => x.setup)) : NaN,
    tests: median(all.map((x) => x.tests)),
    firstTest: median(firstTests),
    laterTest: median(laterTests),
    fileTeardown: median(all.map((x) => x.teardown)),
    toGlobalTeardown: gt ? gt.t - lastTeardown : NaN,
    gteardownMs: gt ? gt.end - gt.t : NaN,
    exit: gt ? t1 - gt.end : NaN,
    runTimings: gt?.timings,
    files: all.length,
    workers: byPid.size,
  };
}

module.exports = { phases };

async function main() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'jestpg-fixed-'));
  fs.chmodSync(root, 0o755);
  const tmp = path.join(root, 'tmp');
  fs.mkdirSync(tmp, { mode: 0o755 });
  process.env.TMPDIR = tmp;
  let cluster;
  const cleanup = async () => {
    if (cluster) await dist('server/cluster').stopCluster(cluster).catch(() => undefined);
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  };
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => cleanup().finally(() => process.exit(130)));
  try {
    const project = path.join(root, 'project');
    generate(project);
    const server = await startServer(path.join(project, 'migrations'), (c) => (cluster = c));
    const ctx = { root, tmp, project, adminUrl: server.adminUrl, template: server.template, seq: 0 };
    // Plain Jest gets its per-worker databases ready (untimed), as in bench/run.js.
    await admin(ctx.adminUrl, async (c) => {
      for (const w of [1, 2]) await c.query(cloneSql(`bench_fx_none_w${w}`, ctx.template));
    });
    const plain = { vars: { BENCH_STRATEGY: 'none', BENCH_DB_PREFIX: 'bench_fx_none' } };
    const onServer = { vars: { BENCH_STRATEGY: 'pkg', JEST_PG_URL: ctx.adminUrl } };
    const warmCache = path.join(root, 'cache-warm');
    const warm = { vars: { BENCH_STRATEGY: 'pkg' }, pgExtra: { cacheDir: warmCache } };
    let cases = [
      { key: 'plain1', label: 'one.test.js, plain Jest', size: 10, pkg: false, env: plain, workers: 2 },
      { key: 'server1', label: 'one.test.js, ours, running server', size: 10, pkg: true, env: onServer, workers: 2 },
      { key: 'warm1', label: 'one.test.js, ours, own cluster, warm cache', size: 10, pkg: true, env: warm, workers: 2 },
      ...(COLD ? [{ key: 'cold1', label: 'one.test.js, ours, own cluster, empty cache (cold)', size: 10, pkg: true, env: 'cold', workers: 2 }] : []),
      { key: 'plain50', label: '50 tests (5 files), plain Jest, 2 workers', size: 50, pkg: false, env: plain, workers: 2 },
      { key: 'server50', label: '50 tests (5 files), ours, running server, 2 workers', size: 50, pkg: true, env: onServer, workers: 2 },
    ];
    if (COMPARE) {
      const twin = (c) => ({
        ...c,
        key: `${c.key}@base`,
        label: `${c.label} [${COMPARE}]`,
        root: COMPARE,
        env: c.env === 'cold' ? 'cold' : c.env === warm ? { ...warm, pgExtra: { cacheDir: `${warmCache}-base` } } : c.env,
      });
      cases = cases.flatMap((c) => (c.pkg ? [c, twin(c)] : [c]));
    }
    // Warm-up: each once, untimed (fills the warm cache, checks every case passes).
    for (const c of cases) await runTimed(ctx, { ...c, env: c.env === 'cold' ? { vars: { BENCH_STRATEGY: 'pkg' }, pgExtra: { cacheDir: path.join(root, `cache-cold-w-${c.key}`) } } : c.env });
    const res = Object.fromEntries(cases.map((c) => [c.key, []]));
    for (let r = 0; r < RUNS; r++) {
      for (let i = 0; i < cases.length; i++) {
        const c = cases[(i + r) % cases.length];
        const env = c.env === 'cold' ? { vars: { BENCH_STRATEGY: 'pkg' }, pgExtra: { cacheDir: path.join(root, `cache-cold-${r}-${c.key}`) } } : c.env;
        res[c.key].push(phases(await runTimed(ctx, { ...c, env })));
        process.stderr.write('.');
      }
    }
    process.stderr.write('\n');
    const rows = [
      ['total (spawn → exit)', 'total'],
      ['node boot (spawn → main process started)', 'nodeBoot'],
      ['Jest boot (→ global setup starts)', 'jestBoot'],
      ['global setup (per run)', 'gsetupMs'],
      ['→ first environment constructed', 'toFirstEnv'],
      ['first file of a worker: constructor + setup (per worker)', 'firstFileSetup'],
      ['later file: constructor + setup (per file)', 'laterFileSetup'],
      ['tests of a file (run_start → run_finish)', 'tests'],
      ['  first test of a file (test_start → test_done, hooks included)', 'firstTest'],
      ['  each later test', 'laterTest'],
      ['end of file: run_finish → environment torn down (per file)', 'fileTeardown'],
      ['→ global teardown starts', 'toGlobalTeardown'],
      ['global teardown (per run)', 'gteardownMs'],
      ['→ exit', 'exit'],
    ];
    const fmt = (x) => (Number.isFinite(x) ? x.toFixed(1) : '—');
    const head = ['phase (median ms)', ...cases.map((c) => c.key)];
    const lines = [head, ...rows.map(([label, k]) => [label, ...cases.map((c) => fmt(median(res[c.key].map((p) => p[k]))))])];
    const widths = head.map((_, i) => Math.max(...lines.map((l) => l[i].length)));
    console.log(`\nfixed costs: ${RUNS} run(s) each, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}`);
    for (const c of cases) console.log(`  ${c.key}: ${c.label}`);
    console.log('');
    for (const l of lines) console.log(l.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  '));
    console.log('\nglobal setup, the run\'s own laps (median run by total):');
    for (const c of cases.filter((x) => x.pkg)) {
      const sorted = [...res[c.key]].sort((a, b) => a.gsetupMs - b.gsetupMs);
      const m = sorted[(sorted.length - 1) >> 1];
      console.log(`  ${c.key}: ${Object.entries(m?.runTimings ?? {}).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    }
    const over = (k) => median(res[k].map((p) => p.total)) - median(res.plain1.map((p) => p.total));
    for (const tag of COMPARE ? ['', '@base'] : ['']) {
      console.log(`${tag ? '' : '\n'}single file over plain Jest${tag}: server ${fmt(over(`server1${tag}`))} ms, warm ${fmt(over(`warm1${tag}`))} ms${COLD ? `, cold ${fmt(over(`cold1${tag}`))} ms` : ''}`);
    }
    if (argv.includes('--json')) console.log(JSON.stringify({ loadavg: os.loadavg(), runs: RUNS, phases: res }));
  } finally {
    await cleanup();
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
