/**
 * Assertions shared by the stack e2e tests (drivers, ORMs, Jest versions): the tests' tally,
 * the exit code, the teardown summary, no JESTPG_ report unless expected, nothing left behind.
 */
import { settle, type JestRun } from './jest-run';

export const SUMMARY = /jest-environment-pg: dropped \d+ databases?, terminated 0 backends in \d+ ms/;

export async function expectRun(
  run: JestRun,
  expected: { passed: number; failed?: number; skipped?: number; code?: number; reports?: boolean; summary?: boolean },
): Promise<void> {
  const failed = expected.failed ?? 0;
  const skipped = expected.skipped ?? 0;
  const total = expected.passed + failed + skipped;
  const tally = [failed && `${failed} failed`, skipped && `${skipped} skipped`, `${expected.passed} passed`, `${total} total`].filter(Boolean).join(', ');
  expect(run.output).toMatch(new RegExp(`Tests:\\s+${tally}`));
  if (expected.summary !== false) expect(run.output).toMatch(SUMMARY);
  if (!expected.reports) expect(run.output).not.toMatch(/JESTPG_/);
  expect(run.output).not.toMatch(/failed to exit gracefully|did not exit one second|Unhandled 'error' event/);
  expect(run.code).toBe(expected.code ?? (failed ? 1 : 0));
  expect(await settle(run.sandboxDir, 10_000)).toEqual({ files: [], processes: [] });
}
