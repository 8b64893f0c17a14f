/**
 * test.concurrent (Jest 30): the concurrent tests of a file share one scope, opened before the
 * first starts and rolled back after the last ends. None of their queries is late while any of
 * them runs; a query that outlives the group is reported; the next serial test starts clean.
 * With the default concurrency and with --maxConcurrency=1.
 */
import fs from 'node:fs';
import path from 'node:path';
import { cleanup, runJest, type JestRun } from '../helpers/jest-run';
import { capture, outDir } from '../helpers/e2e';
import { expectRun } from '../helpers/expect-run';

interface Results {
  testResults: { name: string; assertionResults: { title: string; status: string; failureMessages: string[] }[] }[];
}

const dirs: string[] = [];
afterAll(() => dirs.forEach(cleanup));

test.each([[[] as string[]], [['--maxConcurrency=1']]])('concurrent tests %j', async (extra) => {
  const out = outDir();
  dirs.push(out);
  const json = path.join(out, 'results.json');
  const run: JestRun = await runJest('concurrent', { args: ['--maxWorkers=2', '--json', `--outputFile=${json}`, ...extra], timeoutMs: 90_000 });
  dirs.push(run.sandboxDir);
  capture(`concurrent ${extra.join(' ')}`, run);
  await expectRun(run, { passed: 8, failed: 1, reports: true });
  const results = JSON.parse(fs.readFileSync(json, 'utf8')) as Results;
  const byTitle = new Map(results.testResults.flatMap((f) => f.assertionResults.map((a) => [`${path.basename(f.name)} ${a.title}`, a] as const)));
  for (const [title, a] of byTitle) {
    if (title === 'late.test.js writes and waits') {
      expect(a.status).toBe('failed');
      // Fired as the group ends: it reaches the sandbox just before the end (then it is cancelled
      // after graceMs) or just after (then it runs in a savepoint of its own): late either way.
      expect(a.failureMessages.join('\n')).toMatch(
        /JESTPG_LATE_QUERY: (test "concurrent: writes and waits \+ leaves a slow query running" ended while .*pg_sleep\(2\).*cancelled after 100 ms|Late query: .*pg_sleep\(2\).* arrived after test "concurrent: writes and waits \+ leaves a slow query running" had ended; it ran in a savepoint of its own)/s,
      );
    } else expect([title, a.status]).toEqual([title, 'passed']);
  }
}, 120_000);
