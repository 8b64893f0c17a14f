#!/usr/bin/env node
/**
 * Where the time goes: CPU profiles of the sandbox's hot paths, summarised per function and per
 * category (proxy, pg driver, node internals, native). The suite is profiled with
 * `node --cpu-prof`; the micro workloads with the same V8 sampler started through `inspector`
 * after warm-up, so their profiles hold the measured loop only (100 µs sampling). Not part of `npm run bench` (it prints no comparison); run it when
 * a number of the bench misses its target. Needs `npm run build`.
 *
 *   node bench/profile.js [proxy] [pertest] [suite] [workers] [--keep] [--verbose]
 *   (default: proxy pertest suite)
 *
 *  - proxy:   20,000 sequential `SELECT 1` through the sandbox (pg.Client over TCP, in a test),
 *             in one process like a Jest worker: the proxy's JS cost per simple query.
 *  - pertest: 2,000 tests (beginTest → INSERT + SELECT → endTest) with isolation "test".
 *  - suite:   the bench suite (200 tests) with --runInBand under this package (isolation "test")
 *             and with no isolation, so the proxy and the tests share the profiled process.
 *  - workers: the same with --maxWorkers=2, every node process profiled through
 *             bench/cpu-prof-preload.js: CPU per process (main, each worker).
 * Profiles are kept in the printed directory only with --keep.
 */
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { ROOT, dist, JEST_BIN, cleanEnv, dbUrl, admin, cloneSql, startServer } = require('./common');

// ---------------------------------------------------------------- analysis

function category(cf) {
  const u = cf.url || '';
  const f = cf.functionName;
  if (!u) {
    if (f === '(garbage collector)') return 'GC';
    if (f === '(idle)') return 'idle';
    if (f === '(program)') return 'V8/native (program)';
    if (f === '(root)') return 'root';
    return 'native';
  }
  if (u.includes('/node_modules/')) {
    if (/node_modules\/(pg|pg-protocol|pg-pool|pg-types|pg-connection-string|pgpass|postgres-[a-z]+)\//.test(u)) return 'pg driver';
    if (/node_modules\/(@jest|jest|expect|@babel|pretty-format|jest-[^/]+)\//.test(u)) return 'jest';
    return 'other JS (node_modules)';
  }
  if (u.includes(`${ROOT}/dist/proxy/`)) return 'jest-environment-pg proxy (dist/proxy)';
  if (u.includes(`${ROOT}/dist/`)) return 'jest-environment-pg other (dist)';
  if (u.startsWith('node:')) return 'node internals';
  return 'other JS (tests, harness)';
}

const short = (u) => {
  if (!u) return '';
  const i = u.lastIndexOf('/node_modules/');
  if (i >= 0) return u.slice(i + 14);
  const d = u.indexOf('/dist/');
  if (d >= 0) return u.slice(d + 1);
  return u.replace(/^file:\/\//, '').replace(/^.*\//, '');
};

/** Summarise one .cpuprofile: self time per function and per category, inclusive time of `focus` functions. */
function analyze(file, { top = 25, focusCategory = 'jest-environment-pg proxy (dist/proxy)', perOp } = {}) {
  const p = JSON.parse(fs.readFileSync(file, 'utf8'));
  const byId = new Map();
  for (const n of p.nodes) byId.set(n.id, n);
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const key = (n) => `${n.callFrame.functionName || '(anonymous)'} ${short(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  const self = new Map();
  const cats = new Map();
  const incl = new Map();
  let total = 0;
  let idle = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1] : 0) / 1000; // ms until the next sample
    const n = byId.get(p.samples[i]);
    const cat = category(n.callFrame);
    if (cat === 'idle') {
      idle += dt;
      continue;
    }
    total += dt;
    const k = key(n);
    self.set(k, (self.get(k) ?? 0) + dt);
    cats.set(cat, (cats.get(cat) ?? 0) + dt);
    // Inclusive: every distinct function of the focus category on this sample's stack.
    const seen = new Set();
    for (let id = n.id; id !== undefined; id = parent.get(id)) {
      const m = byId.get(id);
      if (category(m.callFrame) !== focusCategory) continue;
      const mk = key(m);
      if (seen.has(mk)) continue;
      seen.add(mk);
      incl.set(mk, (incl.get(mk) ?? 0) + dt);
    }
  }
  // Time spent under any focus-category frame (the proxy's whole cost, callees included).
  let underFocus = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = (i + 1 < p.timeDeltas.length ? p.timeDeltas[i + 1] : 0) / 1000;
    for (let id = p.samples[i]; id !== undefined; id = parent.get(id)) {
      if (category(byId.get(id).callFrame) === focusCategory) {
        underFocus += dt;
        break;
      }
    }
  }
  const sortDesc = (m) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  const pct = (x) => `${((100 * x) / total).toFixed(1)}%`;
  const lines = [];
  const per = (ms) => (perOp ? `  ${((ms * 1000) / perOp).toFixed(2)} µs/op` : '');
  lines.push(`profile ${path.basename(file)}: ${total.toFixed(0)} ms on CPU, ${idle.toFixed(0)} ms idle${perOp ? `, ${perOp} ops` : ''}`);
  lines.push(`  under ${focusCategory} frames (callees included): ${underFocus.toFixed(0)} ms = ${pct(underFocus)}${per(underFocus)}`);
  lines.push('  self time by category:');
  for (const [c, ms] of sortDesc(cats)) lines.push(`    ${pct(ms).padStart(6)}  ${ms.toFixed(0).padStart(6)} ms  ${c}${per(ms)}`);
  lines.push(`  top ${top} functions by self time:`);
  for (const [k, ms] of sortDesc(self).slice(0, top)) lines.push(`    ${pct(ms).padStart(6)}  ${ms.toFixed(1).padStart(7)} ms  ${k}${per(ms)}`);
  lines.push(`  ${focusCategory}: inclusive time per function (callees included):`);
  for (const [k, ms] of sortDesc(incl).slice(0, 20)) lines.push(`    ${pct(ms).padStart(6)}  ${ms.toFixed(1).padStart(7)} ms  ${k}${per(ms)}`);
  return { text: lines.join('\n'), total, idle, underFocus, cats: Object.fromEntries(cats) };
}

// ---------------------------------------------------------------- child workloads

async function child(workload) {
  const keepAlive = setInterval(() => undefined, 1 << 30);
  const { Client } = require('pg');
  const { startSandbox } = require('./micro');
  const url = process.env.BENCH_DB_URL;
  const sb = await startSandbox(url, process.env.BENCH_SOCKET_DIR);
  const connect = async () => {
    const c = new Client({ connectionString: sb.info.url });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  const N = Number(process.env.BENCH_N);
  // The same sampler as --cpu-prof, started after module loading and warm-up, so the profile
  // holds the measured loop only.
  const inspector = require('inspector');
  const session = new inspector.Session();
  session.connect();
  const post = (m, p) => new Promise((res, rej) => session.post(m, p, (e, r) => (e ? rej(e) : res(r))));
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 100 });
  const startProfile = () => post('Profiler.start');
  let t0 = performance.now();
  if (workload === 'proxy') {
    sb.beginTest('profile');
    const c = await connect();
    for (let i = 0; i < 1000; i++) await c.query('SELECT 1');
    await startProfile();
    const t = performance.now();
    for (let i = 0; i < N; i++) await c.query('SELECT 1');
    process.stderr.write(`proxy: ${N} × SELECT 1 in ${(performance.now() - t).toFixed(0)} ms\n`);
    await c.end();
    await sb.endTest();
  } else if (workload === 'pertest') {
    const c = await connect();
    for (let i = -200; i < N; i++) {
      if (i === 0) {
        await startProfile();
        t0 = performance.now();
      }
      sb.beginTest(`t${i}`);
      const tag = `pf-${i}`;
      const r = await c.query('INSERT INTO t01 (name, email) VALUES ($1, $2) RETURNING id', [tag, tag + '@bench.test']);
      await c.query('SELECT name, amount FROM t01 WHERE id = $1', [r.rows[0].id]);
      await sb.endTest();
    }
    process.stderr.write(`pertest: ${N} tests in ${(performance.now() - t0).toFixed(0)} ms\n`);
    await c.end();
  }
  const { profile } = await post('Profiler.stop');
  fs.writeFileSync(path.join(process.env.BENCH_PROFILE_DIR, `${workload}.cpuprofile`), JSON.stringify(profile));
  session.disconnect();
  await sb.endFile();
  await sb.close();
  clearInterval(keepAlive);
}

// ---------------------------------------------------------------- driver

async function main() {
  const want = process.argv.slice(2).filter((a) => !a.startsWith('--'));
  const which = want.length ? want : ['proxy', 'pertest', 'suite'];
  for (const w of which) if (!['proxy', 'pertest', 'suite', 'workers'].includes(w)) throw new Error(`unknown workload ${w}`);
  const keep = process.argv.includes('--keep');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'jestpg-profile-'));
  fs.chmodSync(root, 0o755);
  const tmp = path.join(root, 'tmp');
  fs.mkdirSync(tmp);
  process.env.TMPDIR = tmp;
  let cluster;
  const cleanup = async () => {
    if (cluster) await dist('server/cluster').stopCluster(cluster).catch(() => undefined);
    if (!keep) fs.rmSync(root, { recursive: true, force: true });
  };
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => cleanup().finally(() => process.exit(130)));
  try {
    const { generate, writeConfig } = require('./suite');
    const project = path.join(root, 'project');
    generate(project);
    const server = await startServer(path.join(project, 'migrations'), (c) => (cluster = c));
    const profDir = path.join(root, 'profiles');
    const runProfiled = (name, args, env, { cpuProfFlag = true } = {}) => {
      const dir = path.join(profDir, name);
      fs.mkdirSync(dir, { recursive: true });
      const flags = cpuProfFlag ? ['--cpu-prof', '--cpu-prof-dir', dir, '--cpu-prof-interval', '200'] : [];
      const r = spawnSync(process.execPath, [...flags, ...args], {
        cwd: project,
        env: cleanEnv({ TMPDIR: tmp, ...env }),
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 300_000,
      });
      const out = String(r.stderr).trim().split('\n').filter((l) => /^(proxy|pertest):|Tests:|failed/.test(l));
      if (out.length) console.log(out.join('\n'));
      if (r.status !== 0) console.log(`(${name}: exit ${r.status})\n${String(r.stderr).slice(-3000)}`);
      return fs.readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).map((f) => path.join(dir, f));
    };
    for (const w of which) {
      console.log(`\n=== ${w} ===`);
      if (w === 'proxy' || w === 'pertest') {
        const db = `bench_prof_${w}`;
        await admin(server.adminUrl, (c) => c.query(cloneSql(db, server.template)));
        const n = w === 'proxy' ? 20000 : 2000;
        const [file] = runProfiled(w, [__filename, '--child', w], {
          BENCH_PROFILE_DIR: path.join(profDir, w),
          BENCH_DB_URL: dbUrl(server.adminUrl, db),
          BENCH_SOCKET_DIR: path.join(tmp, `sock-${w}`),
          BENCH_N: String(n),
        }, { cpuProfFlag: false });
        if (file) console.log(analyze(file, { perOp: n }).text);
      } else if (w === 'workers') {
        // The suite with 2 workers, every node process profiled (NODE_OPTIONS): which process
        // spends what, with and without this package.
        for (const [key, strategy, pkg] of [
          ['pkgTest', 'pkg', 'test'],
          ['none', 'none', undefined],
        ]) {
          const dir = path.join(profDir, `workers-${key}`);
          fs.mkdirSync(dir, { recursive: true });
          const env = { BENCH_STRATEGY: strategy, BENCH_ADMIN_URL: server.adminUrl, BENCH_TEMPLATE: server.template, BENCH_NONCE: `w${key}` };
          if (pkg) env.JEST_PG_URL = server.adminUrl;
          else {
            env.BENCH_DB_PREFIX = 'bench_profw_none';
            await admin(server.adminUrl, async (c) => {
              for (const i of [1, 2]) await c.query(cloneSql(`bench_profw_none_w${i}`, server.template));
            });
          }
          const config = writeConfig(project, key, { size: 200, pkgIsolation: pkg });
          const t = performance.now();
          const r = spawnSync(process.execPath, [JEST_BIN, '--ci', '--maxWorkers=2', '--config', config, '--cacheDirectory', path.join(root, `jcw-${key}`)], {
            cwd: project,
            // Node refuses --cpu-prof in NODE_OPTIONS: a preload starts the same sampler instead.
            env: cleanEnv({ TMPDIR: tmp, ...env, BENCH_PROFILE_DIR: dir, NODE_OPTIONS: `--require ${path.join(__dirname, 'cpu-prof-preload.js')}` }),
            stdio: ['ignore', 'pipe', 'pipe'],
            timeout: 300_000,
          });
          console.log(`suite ${key}, 2 workers, every process profiled: ${(performance.now() - t).toFixed(0)} ms wall, exit ${r.status}`);
          for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.cpuprofile')).sort()) {
            const a = analyze(path.join(dir, f), { top: 12 });
            const cats = Object.entries(a.cats).sort((x, y) => y[1] - x[1]).map(([c, ms]) => `${c} ${ms.toFixed(0)}`).join(', ');
            let cpu = '';
            try {
              const c = JSON.parse(fs.readFileSync(path.join(dir, f + '.cpu.json'), 'utf8'));
              cpu = `CPU ${(c.userMs + c.systemMs).toFixed(0)} ms (user ${c.userMs.toFixed(0)}, sys ${c.systemMs.toFixed(0)}); `;
            } catch {
              /* no usage written */
            }
            console.log(`  ${f}: ${cpu}sampled on-thread ${a.total.toFixed(0)} ms (${cats})`);
            if (process.argv.includes('--verbose')) console.log(a.text);
          }
        }
      } else if (w === 'suite') {
        for (const [key, strategy, pkg] of [
          ['pkgTest', 'pkg', 'test'],
          ['none', 'none', undefined],
        ]) {
          const env = { BENCH_STRATEGY: strategy, BENCH_ADMIN_URL: server.adminUrl, BENCH_TEMPLATE: server.template, BENCH_NONCE: `p${key}` };
          if (pkg) env.JEST_PG_URL = server.adminUrl;
          else {
            env.BENCH_DB_PREFIX = 'bench_prof_none';
            await admin(server.adminUrl, (c) => c.query(cloneSql('bench_prof_none_w1', server.template)));
          }
          const config = writeConfig(project, key, { size: 200, pkgIsolation: pkg });
          const t = performance.now();
          const files = runProfiled(`suite-${key}`, [JEST_BIN, '--ci', '--runInBand', '--config', config, '--cacheDirectory', path.join(root, `jc-${key}`)], env);
          console.log(`suite ${key} (--runInBand, profiled): ${(performance.now() - t).toFixed(0)} ms wall`);
          // The Jest process is the biggest profile (the reaper, if any, is a separate small one).
          const main = files.sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0];
          if (main) console.log(analyze(main, { perOp: 200 }).text.replace(/µs\/op/g, 'µs/test'));
        }
      }
    }
    if (keep) console.log(`\nprofiles kept in ${profDir} (open them in Chrome DevTools → Performance)`);
  } finally {
    await cleanup();
  }
}

if (process.argv[2] === '--child') {
  child(process.argv[3]).catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}

module.exports = { analyze };
