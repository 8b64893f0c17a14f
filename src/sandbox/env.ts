/** The environment variables that point a process at a sandbox. */
import type { ConnectionInfo } from '../proxy/sandbox';

/** The variables a process needs to reach the sandbox. */
export const ENV_NAMES = ['DATABASE_URL', 'PGHOST', 'PGPORT', 'PGUSER', 'PGPASSWORD', 'PGDATABASE'] as const;

export type SandboxEnv = Record<(typeof ENV_NAMES)[number], string> & Record<string, string>;

/**
 * DATABASE_URL and PG* for a sandbox, plus every name in `exposeAs` set to its URL. `database`
 * replaces the database name in them (cosmetic for the sandbox, which serves every name).
 */
export function sandboxEnv(info: ConnectionInfo, exposeAs: readonly string[] = [], database?: string): SandboxEnv {
  if (database !== undefined && database !== info.database) {
    const u = new URL(info.url);
    u.pathname = '/' + encodeURIComponent(database);
    info = { ...info, database, url: u.toString() };
  }
  const env: SandboxEnv = {
    DATABASE_URL: info.url,
    PGHOST: info.host,
    PGPORT: String(info.port),
    PGUSER: info.user,
    PGPASSWORD: info.password,
    PGDATABASE: info.database,
  };
  for (const name of exposeAs) env[name] = info.url;
  return env;
}
