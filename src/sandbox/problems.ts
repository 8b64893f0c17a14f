/** What a test left behind, as the sandbox reported it, classified by the `leaks` / `lateQueries` options. */
import type { Problem } from '../proxy/sandbox';
import { JestPgError, type ErrorCode } from '../util/errors';
import type { PgOptions } from '../util/options';

export interface SandboxProblem extends Problem {
  kind: 'leak' | 'late' | 'interleaved' | 'lost';
  code: 'JESTPG_LEAKED_CONNECTION' | 'JESTPG_LATE_QUERY' | 'JESTPG_INTERLEAVED_WRITE' | 'JESTPG_UPSTREAM_LOST';
  /** From the `leaks` / `lateQueries` option: 'error' should fail the test, 'warn' should not. */
  severity: 'error' | 'warn';
}

/** Attach code and severity (from the `leaks` / `lateQueries` options) to what endTest reported. */
export function classifyProblems(problems: Problem[], options: Pick<PgOptions, 'leaks' | 'lateQueries'>): SandboxProblem[] {
  return problems.map((p): SandboxProblem => {
    // The upstream died during the test: its work is gone, the test fails.
    if (p.kind === 'lost') return { ...p, kind: 'lost', code: 'JESTPG_UPSTREAM_LOST', severity: 'error' };
    const leak = p.kind === 'leak';
    return {
      ...p,
      kind: leak ? 'leak' : p.kind === 'interleaved' ? 'interleaved' : 'late',
      code: leak ? 'JESTPG_LEAKED_CONNECTION' : p.kind === 'interleaved' ? 'JESTPG_INTERLEAVED_WRITE' : 'JESTPG_LATE_QUERY',
      // Work that finished within graceMs of its test's end did no harm, and an interleaved
      // write lost with a rollback may be intended: always warnings.
      severity: leak ? options.leaks : p.kind === 'unawaited' || p.kind === 'interleaved' ? 'warn' : options.lateQueries,
    };
  });
}

/** One error for the 'error' problems of a test (code: the first one's), or undefined when there are none. */
export function problemsError(problems: SandboxProblem[]): JestPgError | undefined {
  const errs = problems.filter((p) => p.severity === 'error');
  if (errs.length === 0) return undefined;
  const message = errs.map((p) => p.message.replace(/^JESTPG_\w+: /, '')).join('\n');
  const err = new JestPgError(errs[0].code as ErrorCode, message);
  err.stack = `${err.code}: ${err.message}`;
  return err;
}
