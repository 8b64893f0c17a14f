/**
 * Sandboxes hosted by the runner's main process (sandbox/host.ts) and driven by a worker over the
 * run's host socket (sandbox/hosted.ts), as under Vitest: boundaries sent without waiting are in
 * effect once delivered() resolves; one sandbox and one upstream connection per worker id serve
 * the files of successive worker processes; a worker that goes away mid-file has its file rolled
 * back before the next worker with its id gets the sandbox, and so does one whose pool id was
 * given to a new worker while its file was open; nothing is left after the host closes.
 */
import path from 'node:path';
import { Client } from 'pg';
import { startRun, teardownRun, type RunManifest } from '../../src/run/run';
import { SandboxHost } from '../../src/sandbox/host';
import { HostedSandbox } from '../../src/sandbox/hosted';
import { hostSocket } from '../../src/sandbox/host-protocol';
import { withDatabase } from '../../src/util/admin';
import { ensureBuilt } from '../helpers/build';
import { bootServer, type TestServer } from '../helpers/server';

let srv: TestServer;
let m: RunManifest | undefined;
let host: SandboxHost | undefined;
const clients: Client[] = [];

beforeAll(async () => {
  ensureBuilt(); // startRun spawns the reaper, the host starts sandbox threads, from dist/
  srv = await bootServer();
  m = await startRun({ server: srv.cluster.url, prefix: 'hosted', migrations: path.join(__dirname, '..', 'fixtures', 'schema50') }, process.pid);
  host = await SandboxHost.start(m);
}, 60_000);

afterAll(async () => {
  for (const c of clients) await c.end().catch(() => undefined);
  await host?.close();
  if (m) await teardownRun(m).catch(() => undefined);
  await srv?.stop();
}, 60_000);

const OPTIONS = { isolation: 'test' as const, graceMs: 100, lockWaitMs: 2000, resetSequences: true };

/** A worker process's side: connect, open a file (as SandboxFile does). */
async function openFile(name: string): Promise<HostedSandbox> {
  const h = await HostedSandbox.connect(hostSocket(m!.runDir), '1');
  h.configure(OPTIONS);
  h.currentFile = name;
  h.expectFile();
  await h.beginFile();
  return h;
}

async function client(h: HostedSandbox): Promise<Client> {
  const c = new Client({ connectionString: h.info.url });
  c.on('error', () => undefined); // closed by the sandbox at the end of its file
  await c.connect();
  clients.push(c);
  return c;
}

async function upstreams(): Promise<number> {
  const c = new Client({ connectionString: withDatabase(srv.cluster.url, 'postgres') });
  await c.connect();
  try {
    const r = await c.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname LIKE $1 AND backend_type = 'client backend'`, [`${m!.prefix}\\_${m!.runId}\\_w%`]);
    return r.rows[0].n as number;
  } finally {
    await c.end();
  }
}

test('a test begun over the host socket owns the queries sent after delivered(); its writes roll back, the file scope stays', async () => {
  const h = await openFile('a.test.ts');
  const c = await client(h);
  await c.query('CREATE TABLE hosted_file (x int)');
  h.beginTest('first');
  await h.delivered();
  await c.query('INSERT INTO hosted_file VALUES (1)');
  expect((await h.endTest()).problems).toEqual([]);
  h.beginTest('second');
  await h.delivered();
  expect((await c.query('SELECT count(*)::int AS n FROM hosted_file')).rows[0].n).toBe(0);
  expect((await h.endTest()).problems).toEqual([]);
  const report = await h.endFile();
  expect(report.foreign).toEqual([]);
  h.close();
  // The next worker process with this id gets the same sandbox: the file transaction was rolled back.
  const h2 = await openFile('b.test.ts');
  expect(h2.info.url).toBe(h.info.url);
  const c2 = await client(h2);
  expect((await c2.query(`SELECT to_regclass('hosted_file') AS t`)).rows[0].t).toBeNull();
  await h2.endFile();
  h2.close();
  // One upstream connection for both files: it stays with the host until the run ends.
  expect(await upstreams()).toBe(1);
}, 30_000);

test('a worker that goes away in the middle of its file: the host rolls the file back and closes its clients before the next worker opens one', async () => {
  const h = await openFile('killed.test.ts');
  const c = await client(h);
  await c.query('CREATE TABLE hosted_left (x int)');
  h.beginTest('never ends');
  await h.delivered();
  const closed = new Promise<void>((resolve) => c.once('end', () => resolve()));
  h.close(); // the worker process is gone: its socket closes
  const next = await openFile('next.test.ts');
  await closed;
  const c2 = await client(next);
  expect((await c2.query(`SELECT to_regclass('hosted_left') AS t`)).rows[0].t).toBeNull();
  await next.endFile();
  next.close();
}, 30_000);

test('a new worker with the id of one whose file is still open (stuck): the old file ends first, and the old connection closing later leaves the new file alone', async () => {
  const stuck = await openFile('stuck.test.ts');
  const c = await client(stuck);
  await c.query('CREATE TABLE hosted_stuck (x int)');
  const next = await openFile('after-stuck.test.ts');
  const c2 = await client(next);
  expect((await c2.query(`SELECT to_regclass('hosted_stuck') AS t`)).rows[0].t).toBeNull();
  await c2.query('CREATE TABLE hosted_next (x int)');
  stuck.close();
  next.beginTest('still open');
  await next.delivered();
  expect((await c2.query(`SELECT to_regclass('hosted_next') IS NOT NULL AS ok`)).rows[0].ok).toBe(true);
  expect((await next.endTest()).problems).toEqual([]);
  await next.endFile();
  next.close();
}, 30_000);

test('closing the host closes its sandboxes and their upstream connections', async () => {
  await host!.close();
  host = undefined;
  expect(await upstreams()).toBe(0);
  const summary = await teardownRun(m!);
  m = undefined;
  expect(summary.terminated).toBe(0);
}, 30_000);
