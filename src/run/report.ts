/** What a teardown prints: the connections still open, and one summary line. */
import { withDatabase } from '../util/admin';
import { redactUrl } from '../util/errors';

/** A backend still connected to a run database at teardown, as pg_stat_activity lists it. */
export interface Backend {
  pid: number;
  datname: string;
  usename: string | null;
  application_name: string | null;
  client_addr: string | null;
  state: string | null;
  query: string | null;
  backend_start: Date | null;
}

export function formatReport(backends: Backend[]): string {
  if (backends.length === 0) return '';
  const lines = backends.map((b) => {
    const q = (b.query ?? '').replace(/\s+/g, ' ').trim();
    const query = q.length > 100 ? q.slice(0, 97) + '...' : q;
    return (
      `  pid ${b.pid}  db ${b.datname}  app ${JSON.stringify(b.application_name ?? '')}  ` +
      `client ${b.client_addr ?? 'unix socket'}  state ${b.state ?? '?'}${query ? `  last query: ${query}` : ''}`
    );
  });
  const n = backends.length;
  return (
    `jest-environment-pg: ${n} connection${n === 1 ? ' was' : 's were'} still open to this run's databases at teardown (terminated):\n` +
    lines.join('\n') +
    `\nThey did not go through the sandbox or were never closed: close pools and stop servers/child processes in afterAll.`
  );
}

/** Print a teardown's report (if any) and its summary line on stderr. */
export function printTeardown(summary: { report: string; summaryLine: string }): void {
  if (summary.report) process.stderr.write(summary.report + '\n');
  process.stderr.write(summary.summaryLine + '\n');
}

/** "jest-environment-pg: dropped 2 databases, terminated 0 backends in 41 ms" (and what was kept, the idle connections closed). */
export function summaryLine(r: { dropped: string[]; terminated: number; ms: number; kept?: string[]; idle: number }): string {
  const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;
  const keptText = r.kept?.length ? `, kept ${r.kept.length} (keepDatabases)` : '';
  const idleText = r.idle ? `; closed ${plural(r.idle, 'idle connection')} left open at the end of test files` : '';
  return `jest-environment-pg: dropped ${plural(r.dropped.length, 'database')}${keptText}, terminated ${plural(r.terminated, 'backend')} in ${r.ms} ms${idleText}`;
}

/** keepDatabases: what was kept, where, and how to stop the embedded server. */
export function keptReport(m: { adminUrl: string; cluster?: { url: string; pid: number; baseDir: string } }, kept: string[]): string {
  const where = m.cluster
    ? `The embedded server keeps running at ${m.cluster.url} (pid ${m.cluster.pid}); stop it with: kill ${m.cluster.pid} && rm -rf ${m.cluster.baseDir}`
    : `on ${redactUrl(m.adminUrl)}`;
  return (
    `jest-environment-pg: keepDatabases is on, so these databases were kept:\n` +
    kept.map((d) => `  ${d}  ${redactUrl(withDatabase(m.adminUrl, d))}`).join('\n') +
    `\n${where}`
  );
}
