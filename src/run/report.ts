/** What a teardown prints: the connections still open, and one summary line. */

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
