/**
 * `jest-environment-pg` command line: `run -- <command>`, `doctor`, `sweep`.
 * The entry point is bin/jest-environment-pg.js → main(process.argv.slice(2)) → exit code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import type { Client } from 'pg';
import { connect, withClient } from '../util/admin';
import { binaryPlaces, findBinaries, hasBinaries, postgresVersion, type Binaries } from '../server/binaries';
import { pickRoot, serverOsUser, startCluster, stopCluster, type ClusterInfo } from '../server/cluster';
import { codedMessage, messageOf, redactUrl } from '../util/errors';
import { isLeaseHeld, listRunDatabases, sweep } from '../run/lease';
import { reaperScript } from '../run/reaper';
import { teardownRun } from '../run/run';
import { sweepStaleLocal } from '../run/stale';
import { packageVersion } from '../util/version';
import { startSandbox, type SandboxHandle } from '../sandbox/api';

export const USAGE = `Usage: jest-environment-pg <command> [options]

Commands:
  run [options] -- <command> [args...]
      Start a sandbox (a PostgreSQL database kept inside one transaction), run <command>
      with DATABASE_URL and PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE pointing at it,
      forward SIGINT/SIGTERM/SIGHUP to it, and when it exits: roll everything back, print
      the connections it left open, tear down, and exit with <command>'s exit code
      (128+n if it died of signal n).
  doctor [--server URL] [--bin-dir DIR]
      Check what jest-environment-pg needs: PostgreSQL binaries (and boot and stop a
      throwaway cluster), or, with JEST_PG_URL/--server, the server's version and the
      role's CREATEDB. Prints what it found and what to fix; exit 1 on problems.
  sweep [--server URL] [--prefix P]
      Drop the databases of dead runs (their lease is free) on the server in
      JEST_PG_URL/--server, and remove local leftovers of dead runs (run dirs, throwaway
      clusters). Never touches a live run's databases or anything it did not create.

Options of run:
  --migrations PATH          a directory of .sql files, one .sql file, or a JS/TS module
                             exporting async (url) => {}
  --migrations-command CMD   a shell command run with DATABASE_URL/PG* set
  --seed PATH, --seed-command CMD
                             applied after the migrations (into the template)
  --expose NAME              also set NAME to the sandbox URL (repeatable, or A,B)
  --server URL               an existing server whose role has CREATEDB
                             (default $JEST_PG_URL, else a throwaway cluster)
  --bin-dir DIR              directory containing initdb and postgres
  --cache-dir DIR            where the throwaway cluster is cached for warm starts
  --no-cache                 do not use the cache
  --lock-wait-ms N           how long a query may wait for a connection that holds a
                             transaction before it fails (default 2000)
  --prefix P                 prefix of the databases created (default jestpg)
  --keep-databases           keep the database at the end and print its name (debugging)
  -q, --quiet                print only problems (no ready line, no summary)

Options:
  -h, --help                 this text
  -v, --version              the version

Environment: JEST_PG_URL (the server to use), JEST_PG_OS_USER (the user Postgres runs as
when started by root; default nobody).`;

type Flag = { name: string; value: boolean; repeat?: boolean; key?: string };

const RUN_FLAGS: Flag[] = [
  { name: 'migrations', value: true },
  { name: 'migrations-command', value: true },
  { name: 'seed', value: true },
  { name: 'seed-command', value: true },
  { name: 'expose', value: true, repeat: true },
  { name: 'server', value: true },
  { name: 'bin-dir', value: true },
  { name: 'cache-dir', value: true },
  { name: 'no-cache', value: false },
  { name: 'lock-wait-ms', value: true },
  { name: 'prefix', value: true },
  { name: 'keep-databases', value: false },
  { name: 'quiet', value: false },
];
const DOCTOR_FLAGS: Flag[] = [
  { name: 'server', value: true },
  { name: 'bin-dir', value: true },
  { name: 'prefix', value: true },
];
const SWEEP_FLAGS: Flag[] = [
  { name: 'server', value: true },
  { name: 'prefix', value: true },
];

export class UsageError extends Error {}

export interface Parsed {
  flags: Record<string, string | string[] | true>;
  /** Everything after `--` (or from the first non-option on). */
  rest: string[];
}

/** `--name value`, `--name=value`, `-q`; stops at `--` or at the first non-option argument. */
export function parseArgs(args: string[], spec: Flag[]): Parsed {
  const flags: Parsed['flags'] = {};
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i];
    if (a === '--') {
      i++;
      break;
    }
    if (!a.startsWith('-') || a === '-') break;
    const short: Record<string, string> = { '-q': 'quiet' };
    let name: string;
    let inline: string | undefined;
    if (short[a]) name = short[a];
    else if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      inline = eq < 0 ? undefined : a.slice(eq + 1);
    } else throw new UsageError(`unknown option ${a}`);
    const f = spec.find((x) => x.name === name);
    if (!f) throw new UsageError(`unknown option --${name}`);
    if (!f.value) {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      flags[name] = true;
      continue;
    }
    const v = inline ?? args[++i];
    if (v === undefined) throw new UsageError(`--${name} needs a value`);
    if (f.repeat) flags[name] = [...((flags[name] as string[] | undefined) ?? []), v];
    else flags[name] = v;
  }
  return { flags, rest: args.slice(i) };
}

const str = (v: Parsed['flags'][string] | undefined): string | undefined => (typeof v === 'string' ? v : undefined);

/** The `pg` options a `run` command line stands for (validated by startRun like a jest config). */
export function runOptions(flags: Parsed['flags']): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const both = (pathFlag: string, cmdFlag: string, key: string) => {
    const p = str(flags[pathFlag]);
    const c = str(flags[cmdFlag]);
    if (p && c) throw new UsageError(`give --${pathFlag} or --${cmdFlag}, not both`);
    if (p) o[key] = p;
    if (c) o[key] = { command: c };
  };
  both('migrations', 'migrations-command', 'migrations');
  both('seed', 'seed-command', 'seed');
  const expose = ((flags.expose as string[] | undefined) ?? []).flatMap((x) => x.split(',')).map((x) => x.trim()).filter(Boolean);
  for (const name of expose) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UsageError(`--expose ${name}: not an environment variable name`);
  if (expose.length) o.exposeAs = expose;
  if (str(flags.server)) o.server = str(flags.server);
  if (str(flags['bin-dir'])) o.binDir = path.resolve(str(flags['bin-dir'])!);
  if (flags['no-cache'] && flags['cache-dir']) throw new UsageError('give --cache-dir or --no-cache, not both');
  if (flags['no-cache']) o.cacheDir = false;
  if (str(flags['cache-dir'])) o.cacheDir = str(flags['cache-dir']);
  if (flags['lock-wait-ms'] !== undefined) {
    const n = Number(flags['lock-wait-ms']);
    if (!Number.isFinite(n) || n < 0) throw new UsageError('--lock-wait-ms needs a number of milliseconds');
    o.lockWaitMs = n;
  }
  if (str(flags.prefix)) o.prefix = str(flags.prefix);
  if (flags['keep-databases']) o.keepDatabases = true;
  return o;
}

export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}
const stdio: Io = { out: (s) => process.stdout.write(s + '\n'), err: (s) => process.stderr.write(s + '\n') };

/**
 * Run the CLI; resolves with the exit code. Until it does, a ref'd timer holds the event loop:
 * an await on something unref'd can never let Node exit 0 in the middle of a command (starting
 * the sandbox is bounded step by step: see settle.ts).
 */
export async function main(argv: string[], io: Io = stdio): Promise<number> {
  const hold = setInterval(() => undefined, 60_000);
  try {
    return await dispatch(argv, io);
  } finally {
    clearInterval(hold);
  }
}

async function dispatch(argv: string[], io: Io): Promise<number> {
  const [cmd, ...args] = argv;
  try {
    switch (cmd) {
      case 'run':
        return await runCommand(args, io);
      case 'doctor':
        return await doctor(parseArgs(args, DOCTOR_FLAGS), io);
      case 'sweep':
        return await sweepCommand(parseArgs(args, SWEEP_FLAGS), io);
      case '-v':
      case '--version':
        io.out(packageVersion());
        return 0;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        io.out(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`jest-environment-pg: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    io.err(`jest-environment-pg: ${codedMessage(e)}`);
    return 1;
  }
}

// ---------------------------------------------------------------------------------------------
// run

const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

function signalExit(sig: NodeJS.Signals): number {
  return 128 + (osConstants.signals[sig] ?? 1);
}

/** Variables that would send a client somewhere else than the sandbox, or ask it for TLS it does not speak. */
const DROPPED_ENV = ['PGHOSTADDR', 'PGSERVICE', 'PGSERVICEFILE', 'PGSSLMODE', 'PGREQUIRESSL', 'PGSSLNEGOTIATION', 'JEST_PG_MANIFEST'];

async function runCommand(args: string[], io: Io): Promise<number> {
  const { flags, rest: command } = parseArgs(args, RUN_FLAGS);
  if (command.length === 0) throw new UsageError('run needs a command: jest-environment-pg run [options] -- <command> [args...]');
  const options = runOptions(flags);
  const quiet = flags.quiet === true;
  const shown = command.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  const label = `the command \`${shown.length > 80 ? shown.slice(0, 77) + '...' : shown}\``;
  const signals = new RunSignals(io);
  try {
    const t0 = performance.now();
    let sb: SandboxHandle;
    try {
      sb = await startSandbox({ ...(options as object), rootDir: process.cwd(), label });
    } catch (e) {
      io.err(`jest-environment-pg: could not start the sandbox: ${codedMessage(e)}`);
      return signals.pending ? signalExit(signals.pending) : 1;
    }
    let code: number;
    if (signals.pending) code = signalExit(signals.pending);
    else {
      if (!quiet) {
        io.err(`jest-environment-pg: sandbox ready in ${Math.round(performance.now() - t0)} ms: DATABASE_URL=${redactUrl(sb.url)} (database ${sb.database}); running ${shown}`);
      }
      code = await runChild(command, shown, sb, signals, io);
    }
    signals.tearingDown = true;
    const report = await sb.close();
    if (report.text) io.err(report.text);
    if (report.teardown.report) io.err(report.teardown.report);
    if (!quiet || report.text || report.teardown.report) io.err(report.teardown.summaryLine);
    return code;
  } finally {
    signals.remove();
  }
}

/**
 * Signals during `run`: forwarded to the command while it runs; before it starts they cancel the
 * run; during teardown the first is noted and a second one leaves the rest to the reaper.
 */
class RunSignals {
  child: ChildProcess | undefined;
  childDone = false;
  /** A signal that came before the command started: the run is cancelled, with its exit code. */
  pending: NodeJS.Signals | undefined;
  tearingDown = false;
  private noted = false;
  private readonly onSignal = (sig: NodeJS.Signals) => this.signal(sig);

  constructor(private readonly io: Io) {
    for (const s of FORWARDED) process.on(s, this.onSignal);
  }

  remove(): void {
    for (const s of FORWARDED) process.removeListener(s, this.onSignal);
  }

  private signal(sig: NodeJS.Signals): void {
    if (this.child && !this.childDone) {
      try {
        this.child.kill(sig);
      } catch {
        // already gone
      }
      return;
    }
    if (this.tearingDown) {
      if (!this.noted) {
        this.noted = true;
        this.io.err('jest-environment-pg: rolling back and tearing down; interrupt again to leave it to the reaper.');
        return;
      }
      process.exit(signalExit(sig));
    }
    this.pending ??= sig;
  }
}

/** Run the command against the sandbox (its variables in the environment); resolves with its exit code. */
function runChild(command: string[], shown: string, sb: SandboxHandle, signals: RunSignals, io: Io): Promise<number> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of DROPPED_ENV) delete env[k];
  Object.assign(env, sb.env);
  return new Promise<number>((resolve) => {
    let child: ChildProcess;
    try {
      child = signals.child = spawn(command[0], command.slice(1), { stdio: 'inherit', env, shell: process.platform === 'win32' });
    } catch (e) {
      signals.childDone = true;
      io.err(`jest-environment-pg: could not start ${shown}: ${messageOf(e)}`);
      resolve(127);
      return;
    }
    child.on('error', (e) => {
      signals.childDone = true;
      io.err(`jest-environment-pg: could not start ${shown}: ${messageOf(e)}`);
      resolve((e as NodeJS.ErrnoException).code === 'ENOENT' ? 127 : 126);
    });
    child.on('exit', (c, s) => {
      signals.childDone = true;
      resolve(c ?? (s ? signalExit(s) : 1));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// doctor

interface Place {
  ok: boolean;
  what: string;
  detail: string;
}

/** Every place findBinaries looks, in its order (binaryPlaces), and what is there (for the report only). */
async function binaryReport(binDir: string | undefined): Promise<Place[]> {
  const places: Place[] = [];
  for await (const p of binaryPlaces({ binDir, resolveFrom: [process.cwd()] })) {
    const what = p.source;
    if ('missing' in p) places.push({ ok: false, what, detail: p.missing });
    else if (!hasBinaries(p.dir)) places.push({ ok: false, what, detail: p.source === 'system location' ? `${p.dir}: not there` : `${p.dir}: no initdb/postgres` });
    else {
      try {
        places.push({ ok: true, what, detail: `${p.dir} (PostgreSQL ${await postgresVersion(p.dir)})` });
      } catch (e) {
        places.push({ ok: false, what, detail: `${p.dir}: postgres --version failed (${messageOf(e).split('\n')[0]})` });
      }
    }
  }
  return places;
}

async function doctor({ flags }: Parsed, io: Io): Promise<number> {
  const problems: string[] = [];
  const line = (ok: boolean | undefined, text: string, indent = 2) => io.out(`${' '.repeat(indent)}${ok === undefined ? '·' : ok ? '✓' : '✗'} ${text}`);
  io.out(`jest-environment-pg ${packageVersion()} doctor — node ${process.version} on ${process.platform}-${process.arch}`);
  try {
    line(true, `reaper script: ${reaperScript()}`);
  } catch (e) {
    line(false, messageOf(e));
    problems.push('The package is not built: run `npm run build` (or reinstall the package).');
  }
  const server = str(flags.server) ?? process.env.JEST_PG_URL;
  const prefix = str(flags.prefix) ?? 'jestpg';
  if (server) {
    io.out(`Server ${redactUrl(server)} (from ${str(flags.server) ? '--server' : 'JEST_PG_URL'}); no binaries are needed:`);
    await checkServer(server, prefix, line, problems);
  } else {
    io.out('Server: none given (JEST_PG_URL unset, no --server): each run starts a throwaway cluster.');
    await checkEmbedded(str(flags['bin-dir']), line, problems);
  }
  if (problems.length) {
    io.out(`\n${problems.length} problem${problems.length === 1 ? '' : 's'} to fix:`);
    for (const p of problems) io.out(`  - ${p.replace(/\n/g, '\n    ')}`);
    return 1;
  }
  io.out('\nEverything jest-environment-pg needs is here.');
  return 0;
}

type Line = (ok: boolean | undefined, text: string, indent?: number) => void;

async function checkServer(url: string, prefix: string, line: Line, problems: string[]): Promise<void> {
  const t0 = performance.now();
  let c: Client;
  try {
    c = await connect(url, { applicationName: 'jest-environment-pg doctor', timeoutMs: 5000 });
  } catch (e) {
    line(false, `cannot connect: ${messageOf(e)}`);
    problems.push(`Start the server or fix JEST_PG_URL/--server (${redactUrl(url)}), or unset it to let each run start a throwaway cluster.`);
    return;
  }
  try {
    line(true, `connected in ${Math.round(performance.now() - t0)} ms`);
    const v = (await c.query<{ v: string; n: string }>("SELECT current_setting('server_version') AS v, current_setting('server_version_num') AS n")).rows[0];
    const num = Number(v.n);
    const oldOk = num >= 130000;
    line(oldOk ? true : undefined, `PostgreSQL ${v.v}${oldOk ? '' : ' (older than 13: DROP DATABASE … WITH (FORCE) is missing, teardown terminates and retries instead)'}`);
    const r = (
      await c.query<{ rolname: string; super: boolean; createdb: boolean }>(
        'SELECT rolname, rolsuper AS super, rolcreatedb AS createdb FROM pg_roles WHERE rolname = current_user',
      )
    ).rows[0];
    const can = !!r && (r.super || r.createdb);
    line(can, `role "${r?.rolname}": ${r?.super ? 'superuser' : r?.createdb ? 'CREATEDB' : 'may not create databases'}`);
    if (!can) problems.push(`Role "${r?.rolname}" needs CREATEDB: run \`ALTER ROLE "${r?.rolname}" CREATEDB\` as a superuser, or use another role in the URL.`);
    const tpl = (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_database WHERE datistemplate AND left(datname, length($1)) = $1', [`${prefix}_tpl_`])).rows[0].n;
    const dbs = await listRunDatabases(c, prefix);
    const runs = new Map<string, number>();
    for (const d of dbs) runs.set(d.runId, (runs.get(d.runId) ?? 0) + 1);
    let dead = 0;
    let deadDbs = 0;
    for (const [runId, n] of runs) {
      if (!(await isLeaseHeld(c, runId))) {
        dead++;
        deadDbs += n;
      }
    }
    line(
      deadDbs ? undefined : true,
      `databases named ${prefix}_*: ${tpl} template${tpl === 1 ? '' : 's'}, ${dbs.length - deadDbs} of ${runs.size - dead} live run${runs.size - dead === 1 ? '' : 's'}, ${deadDbs} of ${dead} dead run${dead === 1 ? '' : 's'}${deadDbs ? ' (the next run or `jest-environment-pg sweep` drops them)' : ''}`,
    );
  } catch (e) {
    line(false, messageOf(e));
    problems.push(`A query on ${redactUrl(url)} failed: ${messageOf(e)}`);
  } finally {
    await c.end().catch(() => undefined);
  }
}

async function checkEmbedded(binDir: string | undefined, line: Line, problems: string[]): Promise<void> {
  try {
    const osUser = serverOsUser();
    if (osUser) line(true, `running as root: Postgres will run as "${osUser.name}" (uid ${osUser.uid}; set JEST_PG_OS_USER to change)`);
  } catch (e) {
    line(false, messageOf(e));
    problems.push(messageOf(e));
    return;
  }
  const bins = await checkBinaries(binDir, line, problems);
  if (!bins) return;
  const root = await pickRoot();
  line(true, `data directories go under ${root}${root === '/dev/shm' ? ' (RAM-backed)' : ''}`);
  await checkThrowawayCluster(bins, line, problems);
}

/** Every place the binaries are looked for, and the ones that will be used (undefined: none, a problem noted). */
async function checkBinaries(binDir: string | undefined, line: Line, problems: string[]): Promise<Binaries | undefined> {
  let bins: Binaries | undefined;
  let lookupError: unknown;
  try {
    bins = await findBinaries({ binDir, resolveFrom: [process.cwd()] });
  } catch (e) {
    lookupError = e;
  }
  line(undefined, 'PostgreSQL binaries, in lookup order (the first usable one is used):');
  for (const p of await binaryReport(binDir)) line(p.ok, `${p.what}: ${p.detail}`, 6);
  if (!bins) {
    line(false, 'no usable initdb/postgres');
    problems.push(
      binDir
        ? `binDir ${path.resolve(binDir)} has no working initdb and postgres (a binDir that is set is never skipped): fix or remove it (or --bin-dir), or set JEST_PG_URL to an existing server.`
        : messageOf(lookupError),
    );
    return undefined;
  }
  line(true, `using ${bins.binDir} (${bins.source}), PostgreSQL ${bins.version}`);
  return bins;
}

/** Start a throwaway cluster, query it, stop it: each step's time on one line. */
async function checkThrowawayCluster(bins: Binaries, line: Line, problems: string[]): Promise<void> {
  let cluster: ClusterInfo | undefined;
  const stop = () => {
    if (cluster) void stopCluster(cluster).finally(() => process.exit(130));
    else process.exit(130);
  };
  process.once('SIGINT', stop);
  try {
    const t0 = performance.now();
    cluster = await startCluster({ binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir });
    const booted = Math.round(performance.now() - t0);
    const t1 = performance.now();
    const version = await withClient(cluster.url, async (c) => (await c.query<{ v: string }>('SELECT version() AS v')).rows[0].v, {
      applicationName: 'jest-environment-pg doctor',
    });
    const queried = Math.round(performance.now() - t1);
    const t2 = performance.now();
    const c = cluster;
    cluster = undefined;
    await stopCluster(c);
    const stopped = Math.round(performance.now() - t2);
    line(
      true,
      `throwaway cluster: initdb ${c.timings?.initdb ?? '?'} ms + start ${c.timings?.start ?? '?'} ms (${booted} ms in all), connect + query ${queried} ms, stop + remove ${stopped} ms`,
    );
    line(true, version);
  } catch (e) {
    line(false, `the throwaway cluster failed: ${messageOf(e)}`);
    problems.push(`${messageOf(e)}`);
    if (cluster) await stopCluster(cluster).catch(() => undefined);
  } finally {
    process.removeListener('SIGINT', stop);
  }
}

// ---------------------------------------------------------------------------------------------
// sweep

async function sweepCommand({ flags, rest }: Parsed, io: Io): Promise<number> {
  if (rest.length) throw new UsageError(`sweep takes no arguments (got ${rest.join(' ')})`);
  const server = str(flags.server) ?? process.env.JEST_PG_URL;
  const prefix = str(flags.prefix) ?? 'jestpg';
  if (!/^[a-z][a-z0-9]{0,15}$/.test(prefix)) throw new UsageError(`--prefix ${prefix}: lowercase letters and digits, starting with a letter, at most 16 characters`);
  let code = 0;
  const local = await sweepStaleLocal((dead) => teardownRun(dead, { fromReaper: true })).catch((e) => {
    io.err(`jest-environment-pg sweep: local leftovers: ${messageOf(e)}`);
    code = 1;
    return [] as string[];
  });
  io.out(`local leftovers of dead runs: ${local.length ? `removed ${local.length}:` : 'none'}`);
  for (const p of local) io.out(`  ${p}`);
  if (!server) {
    io.out('no server given (JEST_PG_URL or --server): nothing to sweep on a server (a throwaway cluster goes with its run).');
    return code;
  }
  let before: { name: string; runId: string }[];
  try {
    before = await withClient(server, (c) => listRunDatabases(c, prefix), { applicationName: 'jest-environment-pg sweep' });
  } catch (e) {
    io.err(`jest-environment-pg sweep: ${messageOf(e)}`);
    return 1;
  }
  const r = await sweep(server, prefix);
  const dropped = new Set(r.dropped);
  const kept = before.filter((d) => !dropped.has(d.name));
  const keptRuns = new Set(kept.map((d) => d.runId));
  io.out(
    `${redactUrl(server)}: dropped ${r.dropped.length} database${r.dropped.length === 1 ? '' : 's'} of ${r.deadRuns.length} dead run${r.deadRuns.length === 1 ? '' : 's'}` +
      (r.terminated ? `, terminated ${r.terminated} backend${r.terminated === 1 ? '' : 's'}` : '') +
      (r.dropped.length ? ':' : ''),
  );
  for (const d of r.dropped) io.out(`  - ${d}`);
  io.out(`kept ${kept.length} database${kept.length === 1 ? '' : 's'} of ${keptRuns.size} live run${keptRuns.size === 1 ? '' : 's'}${kept.length ? ':' : ''}`);
  for (const d of kept) io.out(`  + ${d.name}`);
  return code;
}
