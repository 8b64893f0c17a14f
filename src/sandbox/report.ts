/** Human-readable reports: what a test file left behind and what to do about it. */
import type { FileReport } from '../proxy/sandbox';
import { errors } from '../util/errors';

export function formatFileReport(testPath: string, r: FileReport): string {
  const lines: string[] = [];
  if (r.open.length) {
    lines.push(
      `jest-environment-pg: JESTPG_FILE_ENDED: ${r.open.length} connection${r.open.length === 1 ? ' was' : 's were'} still open when ${testPath} ended; closed them:`,
      ...r.open.map((p) => `  - ${p.message}`),
      '  Fix: end pools and clients in afterAll (await pool.end()), and stop servers/child processes that hold connections.',
    );
  }
  if (r.late.length) {
    lines.push(
      `jest-environment-pg: JESTPG_LATE_QUERY: ${r.late.length} quer${r.late.length === 1 ? 'y' : 'ies'} arrived between tests in ${testPath}; each ran in a savepoint of its own that was rolled back:`,
      ...r.late.map((p) => `  - ${p.message.replace(/\n/g, '\n    ')}`),
      '  Fix: await every query and request inside the test that starts it.',
    );
  }
  if (r.foreign.length) {
    const each = r.foreign.map((f) => `pid ${f.pid}, application_name ${JSON.stringify(f.applicationName)}, client ${f.clientAddr}, state ${f.state || 'unknown'}, last query ${JSON.stringify(f.query)}`);
    lines.push(`jest-environment-pg: ${errors.foreignBackends(each).toString()}`);
  }
  return lines.join('\n');
}

/** "jest-environment-pg: removed 2 databases left by a run that died without teardown (run 1a2b3c4d): …" */
export function sweptLine(s: { dropped: string[]; deadRuns: string[]; terminated: number; templates?: string[] }): string {
  const t = s.templates?.length ?? 0;
  const old = t ? `\njest-environment-pg: removed ${t} old template${t === 1 ? '' : 's'} (keepTemplates): ${[...s.templates!].sort().join(', ')}` : '';
  if (s.dropped.length === 0) return old;
  return sweptRunsLine(s) + old;
}

function sweptRunsLine(s: { dropped: string[]; deadRuns: string[]; terminated: number }): string {
  const n = s.dropped.length;
  const runs = s.deadRuns.length === 1 ? `a run that died without teardown (run ${s.deadRuns[0]})` : `${s.deadRuns.length} runs that died without teardown (runs ${s.deadRuns.join(', ')})`;
  const term = s.terminated ? `, terminated ${s.terminated} backend${s.terminated === 1 ? '' : 's'}` : '';
  return `\njest-environment-pg: removed ${n} database${n === 1 ? '' : 's'} left by ${runs}${term}: ${[...s.dropped].sort().join(', ')}`;
}
