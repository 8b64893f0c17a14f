'use strict';
/**
 * The Vitest rows of `npm run bench`: the same generated 200-test suite (same harness, same
 * scenario, same server) run by Vitest 4 on its default `forks` pool with the same worker count:
 * no isolation (the floor), jest-environment-pg through its plugin (isolation "test"), and
 * TRUNCATE after each test; and the floor and ours again with `isolate: false` (a worker process
 * runs many files, so the sandbox starts once per worker, as under Jest). Test files are generated beside the Jest ones (Vitest's globals, the
 * harness loaded with Node's require); `pg` resolves from this package's node_modules (NODE_PATH).
 */
const fs = require('fs');
const path = require('path');
const { ROOT } = require('./common');
const { SIZES, TESTS_PER_FILE } = require('./suite');

const VITEST_BIN = path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');

/** Strategies run by Vitest; `base` names the Jest strategy whose harness branch they share. */
const VITEST_STRATEGIES = [
  { key: 'vitestNone', label: 'Vitest: no isolation (floor)', env: { BENCH_STRATEGY: 'none' }, perWorkerDb: true, vitest: true },
  { key: 'vitestPkg', label: 'Vitest: jest-environment-pg, isolation "test" (plugin)', pkg: 'test', env: { BENCH_STRATEGY: 'pkg' }, vitest: true },
  { key: 'vitestTruncate', label: 'Vitest: TRUNCATE all tables after each test', env: { BENCH_STRATEGY: 'truncate' }, perWorkerDb: true, vitest: true },
  // Without isolation a worker process runs many files: the sandbox starts once per worker, as under Jest.
  { key: 'vitestNoneShared', label: 'Vitest --no-isolate: no isolation (floor)', env: { BENCH_STRATEGY: 'none' }, perWorkerDb: true, vitest: true, shared: true },
  { key: 'vitestPkgShared', label: 'Vitest --no-isolate: jest-environment-pg, isolation "test"', pkg: 'test', env: { BENCH_STRATEGY: 'pkg' }, vitest: true, shared: true },
];

/** Vitest's copy of every generated test file: tests/<g>/fNNN.test.js → tests-vitest/<g>/fNNN.test.mjs. */
function generateVitest(dir) {
  const from = path.join(dir, 'tests');
  for (const g of fs.readdirSync(from)) {
    const d = path.join(dir, 'tests-vitest', g);
    fs.mkdirSync(d, { recursive: true });
    for (const f of fs.readdirSync(path.join(from, g))) {
      const jest = fs.readFileSync(path.join(from, g, f), 'utf8');
      const body = jest.replace("const h = require('../../harness');", "import { createRequire } from 'node:module';\nconst h = createRequire(import.meta.url)('../../harness.js');");
      fs.writeFileSync(path.join(d, f.replace(/\.js$/, '.mjs')), body);
    }
  }
}

/** A Vitest config for one strategy and suite size (the plugin for jest-environment-pg's). */
function writeVitestConfig(dir, name, { size, pkgIsolation }) {
  const shared = VITEST_STRATEGIES.find((s) => s.key === name)?.shared === true;
  const include = SIZES[size].map((g) => `tests-vitest/${g}/*.test.mjs`);
  const plugin = pkgIsolation
    ? `const { pg } = createRequire(import.meta.url)(${JSON.stringify(path.join(ROOT, 'dist', 'vitest', 'index.js'))});\nconst plugins = [pg({ migrations: './migrations', isolation: ${JSON.stringify(pkgIsolation)} })];\n`
    : 'const plugins = [];\n';
  const text =
    `import { createRequire } from 'node:module';\n${plugin}\n` +
    `export default {\n  root: ${JSON.stringify(dir)},\n  cacheDir: ${JSON.stringify(path.join(dir, '.vite', name))},\n  plugins,\n` +
    `  test: { include: ${JSON.stringify(include)}, globals: true, pool: 'forks', isolate: ${!shared} },\n};\n`;
  const file = path.join(dir, `vitest.${name}.${size}.config.mjs`);
  fs.writeFileSync(file, text);
  return file;
}

/** The command line of one Vitest run; Jest's `--testPathPatterns x` becomes Vitest's filter `x`. */
function vitestArgs(config, { workers, out, args }) {
  const filters = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--testPathPatterns') filters.push(args[++i]);
    else filters.push(args[i]);
  }
  return [VITEST_BIN, 'run', '--config', config, `--maxWorkers=${workers}`, '--reporter=json', `--outputFile=${out}`, ...filters];
}

/** The Vitest table: each row against Vitest's own floor; the targets are the Jest ones. */
function vitestRows(S, { fmtMs, fmtX, size }) {
  const none = S.vitestNone?.ms;
  const ours = S.vitestPkg ? S.vitestPkg.ms - none : NaN;
  const floorOf = (k) => (VITEST_STRATEGIES.find((s) => s.key === k)?.shared ? S.vitestNoneShared?.ms : none);
  const floor = 0.01 * none;
  const clamped = !(ours > floor);
  const denom = clamped ? floor : ours;
  const rows = [];
  for (const s of VITEST_STRATEGIES) {
    const v = S[s.key];
    if (!v) continue;
    const f = floorOf(s.key);
    const isFloor = s.key === 'vitestNone' || s.key === 'vitestNoneShared';
    rows.push([
      v.label,
      fmtMs(v.ms),
      `${fmtMs(v.min)}–${fmtMs(v.max)}`,
      fmtX(v.ms / f),
      isFloor ? '0' : fmtMs(v.ms - f),
      isFloor || !Number.isFinite(v.ms) ? '—' : `${Math.round(((v.ms - f) / size) * 1000)}`,
      s.key === 'vitestTruncate' && Number.isFinite(v.ms - none) ? fmtX((v.ms - none) / denom, 1) : '',
    ]);
  }
  const head = [`Vitest ${vitestVersion()} (${size} tests, forks pool, same workers; ÷ floor: the floor of the same isolation)`, 'wall ms', 'min–max', '÷ floor', 'overhead ms', 'µs/test', 'overhead ÷ ours'];
  const json = {
    vitest: vitestVersion(),
    vsNone: S.vitestPkg && none ? S.vitestPkg.ms / none : null,
    vsNoneNoIsolate: S.vitestPkgShared && S.vitestNoneShared ? S.vitestPkgShared.ms / S.vitestNoneShared.ms : null,
    vsTruncate: S.vitestTruncate && Number.isFinite(S.vitestTruncate.ms - none) ? (S.vitestTruncate.ms - none) / denom : null,
    ratiosClamped: clamped,
    targets: 'ours ≤ 1.05 × floor; TRUNCATE overhead ≥ 20 × ours',
  };
  return { head, rows, align: ['l', 'r', 'r', 'r', 'r', 'r', 'r'], json };
}

function vitestVersion() {
  return require(path.join(ROOT, 'node_modules', 'vitest', 'package.json')).version;
}

module.exports = { VITEST_STRATEGIES, generateVitest, writeVitestConfig, vitestArgs, vitestRows, TESTS_PER_FILE };
