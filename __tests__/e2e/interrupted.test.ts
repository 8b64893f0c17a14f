/**
 * Interrupted runs: Ctrl-C once while tests run, SIGKILL of the Jest main process, and the next
 * run after a crash that took the reaper with it. However a run ends, nothing of it remains, and
 * a run never touches the databases of another run that is still alive.
 */
import fs from 'node:fs';
import path from 'node:path';
import { cleanup, runJest, settle } from '../helpers/jest-run';
import { alive, capture, childrenOf, externalServer, killGroup, outDir, startJest, waitFor, type ExternalServer } from '../helpers/e2e';

const dirs: string[] = [];
let server: ExternalServer | undefined;

afterAll(async () => {
  dirs.forEach(cleanup);
  await server?.stop();
}, 30_000);

/** Wait until a test of the slow-run fixture is running (its file wrote to E2E_OUT/started). */
const started = (out: string) => waitFor('a slow test to start', () => fs.existsSync(path.join(out, 'started')), 60_000);

test('Ctrl-C (SIGINT to the process group) once: the teardown completes and its summary prints', async () => {
  const out = outDir();
  dirs.push(out);
  const jest = startJest('slow-run', { args: ['--maxWorkers=2'], env: { E2E_OUT: out, E2E_SLOW_SECONDS: '20' } });
  dirs.push(jest.sandboxDir);
  await started(out);
  killGroup(jest.child, 'SIGINT');
  const r = await jest.done;
  capture('interrupted SIGINT', r);
  expect(r.signal).toBe('SIGINT');
  expect(r.output).toMatch(/jest-environment-pg: SIGINT received, tearing the run down before exiting/);
  expect(r.output).toMatch(/jest-environment-pg: dropped [12] databases?, terminated \d+ backends? in \d+ ms/);
  // The embedded server, the run dir, the reaper: all gone at once, without waiting for the reaper.
  expect(await settle(r.sandboxDir, 3000)).toEqual({ files: [], processes: [] });
}, 90_000);

test('SIGKILL of the Jest main process: the reaper cleans up within a few seconds', async () => {
  const out = outDir();
  dirs.push(out);
  const jest = startJest('slow-run', { args: ['--maxWorkers=2'], env: { E2E_OUT: out, E2E_SLOW_SECONDS: '20' } });
  dirs.push(jest.sandboxDir);
  await started(out);
  // Jest's workers, the reaper and the embedded postmaster are children of the main process.
  const children = childrenOf(jest.child.pid!);
  expect(children.length).toBeGreaterThanOrEqual(3);
  process.kill(jest.child.pid!, 'SIGKILL');
  const r = await jest.done;
  const t0 = Date.now();
  expect(r.signal).toBe('SIGKILL');
  expect(await settle(r.sandboxDir, 10_000)).toEqual({ files: [], processes: [] });
  await waitFor('the workers to exit', () => alive(children).length === 0, 5000);
  expect(Date.now() - t0).toBeLessThan(10_000);
}, 90_000);

describe('after a crash that took the reaper with it (external server)', () => {
  test('the next run sweeps the dead run and leaves a concurrently running run alone', async () => {
    server = await externalServer();
    const env = { JEST_PG_URL: server.url };

    // Run B: alive the whole time (another terminal, another CI shard).
    const outB = outDir();
    dirs.push(outB);
    const b = startJest('slow-run', { args: ['--maxWorkers=2'], env: { ...env, E2E_OUT: outB, E2E_SLOW_SECONDS: '60' } });
    dirs.push(b.sandboxDir);

    // Run A: crashes with everything it started (main, workers and reaper SIGKILLed).
    const outA = outDir();
    dirs.push(outA);
    const a = startJest('slow-run', { args: ['--maxWorkers=2'], env: { ...env, E2E_OUT: outA, E2E_SLOW_SECONDS: '60' } });
    dirs.push(a.sandboxDir);
    await started(outA);
    await started(outB);
    const runDirA = fs.readdirSync(a.sandboxDir).find((f) => f.startsWith('jest-pg-run-'))!;
    const manifestA = JSON.parse(fs.readFileSync(path.join(a.sandboxDir, runDirA, 'manifest.json'), 'utf8')) as { runId: string; reaperPid: number };
    const ofA = (dbs: string[]) => dbs.filter((d) => d.startsWith(`jestpg_${manifestA.runId}_`));
    const dbsA = await waitFor('run A databases', async () => {
      const dbs = ofA(await server!.runDatabases());
      return dbs.length ? dbs : undefined;
    });
    const dbsB = (await server.runDatabases()).filter((d) => !d.startsWith(`jestpg_${manifestA.runId}_`));
    expect(dbsB.length).toBeGreaterThan(0);
    const childrenA = childrenOf(a.child.pid!);
    killGroup(a.child, 'SIGKILL');
    process.kill(manifestA.reaperPid, 'SIGKILL');
    await a.done;
    await waitFor('run A processes to die', () => alive([manifestA.reaperPid, ...childrenA]).length === 0, 5000);
    await new Promise((r) => setTimeout(r, 300));
    expect(ofA(await server.runDatabases())).toEqual(dbsA); // orphans: nobody is left to drop them

    // Run C (another machine or container, as in CI: A's temp dir is not there): sweeps A's
    // databases, says so, and leaves B's alone. (Local leftovers of a dead run on the same machine
    // are swept too: __tests__/integration/lifecycle.test.ts.)
    const c = await runJest('many-files', { args: ['--maxWorkers=2', 'file-0[12]'], env, timeoutMs: 60_000 });
    dirs.push(c.sandboxDir);
    capture('sweep next run', c);
    expect(c.output).toMatch(/Tests:\s+4 passed, 4 total/);
    expect(c.code).toBe(0);
    expect(c.output).toContain(
      `jest-environment-pg: removed ${dbsA.length} database${dbsA.length === 1 ? '' : 's'} left by a run that died without teardown (run ${manifestA.runId}): ${dbsA.join(', ')}`,
    );
    const now = await server.runDatabases();
    expect(ofA(now)).toEqual([]);
    for (const d of dbsB) expect(now).toContain(d);

    // B was not disturbed.
    fs.writeFileSync(path.join(outB, 'release'), '');
    const rb = await b.done;
    expect(rb.output).toMatch(/Tests:\s+3 passed, 3 total/);
    expect(rb.code).toBe(0);
    expect(rb.output).not.toMatch(/does not exist|JESTPG_UPSTREAM_LOST|terminating connection/);

    // Nothing of B or C remains, and nothing of A on the server.
    expect(await settle(b.sandboxDir)).toEqual({ files: [], processes: [] });
    expect(await settle(c.sandboxDir)).toEqual({ files: [], processes: [] });
    expect(await server.runDatabases()).toEqual([]);
    expect(await server.runBackends()).toEqual([]);
  }, 120_000);
});
