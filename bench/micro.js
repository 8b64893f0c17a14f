'use strict';
/**
 * In-process micro benchmarks against one worker database: the sandbox proxy's overhead per
 * `SELECT 1` (through the sandbox vs straight to Postgres, pg.Client, interleaved blocks) and
 * the per-test cost of isolation (beginTest → queries → endTest vs the same queries direct).
 * The sandbox runs in this process, as it does in a Jest worker next to the test code.
 */
const fs = require('fs');
const net = require('net');
const path = require('path');
const { Worker } = require('worker_threads');
const { Client } = require('pg');
const { median, quantile } = require('./stats');

const ROOT = path.resolve(__dirname, '..');
const { Sandbox } = require(path.join(ROOT, 'dist', 'proxy', 'sandbox'));
const { SandboxThread } = require(path.join(ROOT, 'dist', 'sandbox', 'thread'));

const now = () => performance.now();

async function connect(config) {
  const c = new Client(config);
  c.on('error', () => undefined);
  await c.connect();
  return c;
}

/** Time `n` sequential `sql` round trips on a client; returns µs per sample. */
async function sample(client, sql, n, out) {
  for (let i = 0; i < n; i++) {
    const t = now();
    await client.query(sql);
    out.push((now() - t) * 1000);
  }
}

/**
 * Start a sandbox on `dbUrl` (a database the caller owns), in file scope.
 * `track` receives it so the caller can close it on failure.
 */
async function startSandbox(dbUrl, socketDir, track) {
  const sb = await Sandbox.start({
    upstreamUrl: dbUrl,
    socketDir,
    secret: 'bench-secret',
    isolation: 'test',
    graceMs: 100,
    lockWaitMs: 5000,
    label: 'jest-environment-pg bench',
    user: 'postgres',
    database: 'bench',
  });
  track?.(sb);
  await sb.beginFile();
  return sb;
}

const TICK_MS = 10; // USER_HZ on Linux
/** utime + stime of a process, ms (Linux; 0 elsewhere). */
function procCpuMs(pid) {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) * TICK_MS;
  } catch {
    return 0;
  }
}

/** A do-nothing TCP relay in this process: the cost of one more hop through Node's event loop. */
async function startRelay(port) {
  const server = net.createServer((c) => {
    const u = net.connect(port, '127.0.0.1');
    c.setNoDelay(true);
    u.setNoDelay(true);
    c.pipe(u);
    u.pipe(c);
    c.on('error', () => u.destroy());
    u.on('error', () => c.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

/**
 * The same do-nothing relay on a worker thread of its own, its upstream on the cluster's unix
 * socket: what any proxy off the test's thread costs before it does anything (the floor of the
 * sandbox thread's overhead). Resolves with its TCP port and a stop function.
 */
async function startThreadRelay(socketPath) {
  const code = `
    const net = require('net');
    const { parentPort, workerData } = require('worker_threads');
    const server = net.createServer((c) => {
      const u = net.connect(workerData);
      c.setNoDelay(true);
      c.pipe(u);
      u.pipe(c);
      c.on('error', () => u.destroy());
      u.on('error', () => c.destroy());
    });
    server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
    parentPort.on('message', () => server.close(() => process.exit(0)));
  `;
  const w = new Worker(code, { eval: true, workerData: socketPath });
  const port = await new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  return { port, stop: () => w.terminate() };
}

/**
 * Proxy overhead per simple query, decomposed. pg.Client `SELECT 1` round trips:
 *  - direct / sandbox:     straight to Postgres / through the sandbox (DATABASE_URL), over TCP,
 *                          autocommit, inside a test: the overhead users get;
 *  - directTx / sandboxTx: the same inside a client transaction (BEGIN first), where the sandbox
 *                          sends no guard savepoint per cycle: the difference of the two
 *                          overheads is what the guard (RELEASE + SAVEPOINT, pipelined) costs;
 *  - relay:                through a do-nothing TCP relay in this process (socket.pipe): what
 *                          one more hop through Node's event loop costs by itself;
 *  - directUnix / sandboxUnix: both over unix sockets;
 *  - sandboxUpUnix:        the client over TCP, the sandbox's upstream over the cluster's unix
 *                          socket (the embedded cluster has one) instead of TCP;
 *  - threadUpUnix:         the same, with the sandbox on its own thread, as a Jest worker runs
 *                          it (the others run it on this thread, to decompose its costs);
 *  - threadRelay:          a do-nothing relay (socket.pipe) on a thread of its own, upstream on
 *                          the unix socket: the floor of any proxy that lives off the test's thread.
 * Paths take turns in blocks of `block` samples; each overhead is the median over rounds of
 * (median of the path's block − median of its baseline's block), so drift and the other
 * engineers' load on this shared machine hit both sides of every difference alike.
 */
async function proxyOverhead({ dbUrl, cluster, socketDir, samples = 5000, block = 100, track }) {
  const sb = await startSandbox(dbUrl, socketDir, track);
  sb.beginTest('proxy overhead');
  const sbUp = await startSandbox(`postgres://postgres@/${new URL(dbUrl).pathname.slice(1)}?host=${encodeURIComponent(cluster.socketDir)}&port=${cluster.port}`, socketDir + '-up', track);
  sbUp.beginTest('proxy overhead, unix upstream');
  const upUnixUrl = `postgres://postgres@/${new URL(dbUrl).pathname.slice(1)}?host=${encodeURIComponent(cluster.socketDir)}&port=${cluster.port}`;
  const th = await SandboxThread.start({
    upstreamUrl: upUnixUrl,
    socketDir: socketDir + '-thread',
    secret: 'bench-secret',
    isolation: 'test',
    graceMs: 100,
    lockWaitMs: 5000,
    label: 'jest-environment-pg bench thread',
    user: 'postgres',
    database: 'bench',
  });
  track?.(th);
  await th.beginFile();
  th.beginTest('proxy overhead, own thread');
  const relay = await startRelay(cluster.port);
  const threadRelay = await startThreadRelay(path.join(cluster.socketDir, `.s.PGSQL.${cluster.port}`));
  const dbName = new URL(dbUrl).pathname.slice(1);
  const relayUrl = new URL(dbUrl);
  relayUrl.port = String(relay.address().port);
  const clients = {
    direct: await connect({ connectionString: dbUrl }),
    sandbox: await connect({ connectionString: sb.info.url }),
    directTx: await connect({ connectionString: dbUrl }),
    sandboxTx: await connect({ connectionString: sb.info.url }),
    relay: await connect({ connectionString: relayUrl.toString() }),
    directUnix: await connect({ host: cluster.socketDir, port: cluster.port, user: 'postgres', database: dbName }),
    sandboxUnix: await connect({ host: sb.info.socketDir, port: sb.info.port, user: sb.info.user, password: sb.info.password, database: 'bench' }),
    sandboxUpUnix: await connect({ connectionString: sbUp.info.url }),
    threadUpUnix: await connect({ connectionString: th.info.url }),
    threadRelay: await connect({ connectionString: Object.assign(new URL(dbUrl), { port: String(threadRelay.port) }).toString() }),
  };
  const names = Object.keys(clients);
  const times = Object.fromEntries(names.map((k) => [k, []]));
  // CPU per query, robust to the machine's load: this process (client + proxy) from
  // process.cpuUsage(), the serving backend from /proc (10 ms ticks, summed over all blocks).
  const backend = {};
  for (const [k, c] of Object.entries(clients)) backend[k] = Number((await c.query('SELECT pg_backend_pid() AS p')).rows[0].p);
  backend.sandbox = backend.sandboxTx = backend.sandboxUnix = sb.upstream.backendPid;
  backend.sandboxUpUnix = sbUp.upstream.backendPid;
  backend.threadUpUnix = Number(
    (await clients.direct.query("SELECT pid FROM pg_stat_activity WHERE pid NOT IN (SELECT unnest($1::int[])) AND datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()", [[...Object.values(backend), sb.upstream.backendPid, sbUp.upstream.backendPid].filter(Boolean)])).rows[0]?.pid,
  );
  const cpu = Object.fromEntries(names.map((k) => [k, { node: 0, pg: 0, n: 0 }]));
  const rounds = Object.fromEntries(names.map((k) => [k, []]));
  const sandboxTxOwns = async (on) => {
    // sandboxTx holds the upstream while in its transaction: open it only for its own block.
    await clients.sandboxTx.query(on ? 'BEGIN' : 'COMMIT');
  };
  try {
    await clients.directTx.query('BEGIN');
    for (const [k, c] of Object.entries(clients)) {
      if (k === 'sandboxTx') await sandboxTxOwns(true);
      await sample(c, 'SELECT 1', 300, []); // warm-up
      if (k === 'sandboxTx') await sandboxTxOwns(false);
    }
    for (let done = 0; done < samples; done += block) {
      for (const [k, c] of Object.entries(clients)) {
        if (k.endsWith('Unix') && k !== 'sandboxUpUnix' && k !== 'threadUpUnix' && done >= samples / 2) continue;
        if (k === 'sandboxTx') await sandboxTxOwns(true);
        const b = [];
        const pg0 = procCpuMs(backend[k]);
        const n0 = process.cpuUsage();
        await sample(c, 'SELECT 1', block, b);
        const n1 = process.cpuUsage(n0);
        cpu[k].node += n1.user + n1.system;
        cpu[k].pg += (procCpuMs(backend[k]) - pg0) * 1000;
        cpu[k].n += block;
        if (k === 'sandboxTx') await sandboxTxOwns(false);
        times[k].push(...b);
        rounds[k].push(median(b));
      }
    }
  } finally {
    await clients.directTx.query('ROLLBACK').catch(() => undefined);
    for (const c of Object.values(clients)) await c.end().catch(() => undefined);
    await new Promise((r) => relay.close(r));
    await threadRelay.stop();
    // The three sandboxes share one database: each one's end-of-file look would find the others'
    // upstreams as backends around it and end them. Closing (a rollback) is all they need here.
    for (const x of [sb, sbUp, th]) await x.endTest().catch(() => undefined);
    for (const x of [sb, sbUp, th]) await x.close();
  }
  /** Median over rounds of the paired block-median difference. */
  const paired = (a, b) => median(rounds[b].map((x, i) => x - rounds[a][i]).filter(Number.isFinite));
  const pair = (a, b) => ({
    samples: times[a].length,
    directP50: median(times[a]),
    directP99: quantile(times[a], 0.99),
    proxyP50: median(times[b]),
    proxyP99: quantile(times[b], 0.99),
    overheadP50: paired(a, b),
    overheadP99: quantile(times[b], 0.99) - quantile(times[a], 0.99),
  });
  const cpuPer = (k) => ({ nodeUs: cpu[k].node / cpu[k].n, pgUs: cpu[k].pg / cpu[k].n, totalUs: (cpu[k].node + cpu[k].pg) / cpu[k].n });
  const total = paired('direct', 'sandbox');
  const inTx = paired('directTx', 'sandboxTx');
  const hop = paired('direct', 'relay');
  return {
    tcp: pair('direct', 'sandbox'),
    unix: pair('directUnix', 'sandboxUnix'),
    inTx: pair('directTx', 'sandboxTx'),
    relay: pair('direct', 'relay'),
    upstreamUnix: pair('direct', 'sandboxUpUnix'),
    /** As a Jest worker runs it: on its own thread, upstream over the unix socket. */
    thread: pair('direct', 'threadUpUnix'),
    /** The floor of the thread path: a do-nothing relay on its own thread, upstream on the unix socket. */
    threadRelay: pair('direct', 'threadRelay'),
    /** CPU µs per SELECT 1 (this process: client + proxy; Postgres: the serving backend). */
    cpu: Object.fromEntries(names.map((k) => [k, cpuPer(k)])),
    /** The TCP overhead, split: guard savepoint per autocommit cycle, one more hop, the proxy's own work. */
    split: { totalUs: total, guardUs: total - inTx, hopUs: hop, proxyLogicUs: inTx - hop, inTxUs: inTx },
  };
}

/**
 * Per-test cost of isolation. One "test" = insert a row, read it back (two queries, like a
 * minimal test). `directUrl` is a second clone of the same template. Compared: the queries straight to Postgres (no test cycle), through the
 * sandbox in a test with isolation "file" (no savepoint), and with isolation "test"
 * (savepoint + rollback + sequence restore per test). µs per test.
 */
async function perTestOverhead({ dbUrl, directUrl, socketDir, tests = 400, block = 25, track }) {
  // Direct writes commit, and the sandbox restores sequences at each test's end: another database.
  const sb = await startSandbox(dbUrl, socketDir, track);
  const direct = await connect({ connectionString: directUrl });
  let seq = 0;
  const work = async (c) => {
    const tag = `pt-${process.pid}-${++seq}`;
    const r = await c.query('INSERT INTO t01 (name, email) VALUES ($1, $2) RETURNING id', [tag, tag + '@bench.test']);
    await c.query('SELECT name, amount FROM t01 WHERE id = $1', [r.rows[0].id]);
  };
  const times = { direct: [], file: [], test: [], endTest: [] };
  // Isolation is per file (as the environment configures it): each block of tests is one file.
  const file = async (mode, n, record) => {
    sb.configure({ isolation: mode, graceMs: 100, lockWaitMs: 5000, resetSequences: true });
    await sb.beginFile();
    // The sandbox closes every client at the end of a file: a connection per file (untimed).
    const proxy = await connect({ connectionString: sb.info.url });
    try {
      for (let i = 0; i < n; i++) {
        const t = now();
        sb.beginTest(`per-test ${mode} ${i}`);
        await work(proxy);
        const te = now();
        await sb.endTest();
        const end = now();
        if (!record) continue;
        times[mode].push((end - t) * 1000);
        if (mode === 'test') times.endTest.push((end - te) * 1000);
      }
    } finally {
      await proxy.end().catch(() => undefined);
      await sb.endFile();
    }
  };
  const directBlock = async (n, record) => {
    for (let i = 0; i < n; i++) {
      const t = now();
      await work(direct);
      if (record) times.direct.push((now() - t) * 1000);
    }
  };
  try {
    await sb.endFile(); // startSandbox opened one; each block opens its own
    await directBlock(50, false);
    await file('file', 50, false);
    await file('test', 50, false);
    for (let done = 0; done < tests; done += block) {
      await directBlock(block, true);
      await file('file', block, true);
      await file('test', block, true);
    }
  } finally {
    await direct.end().catch(() => undefined);
    await sb.close();
  }
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  return {
    tests: times.direct.length,
    directUs: m.direct,
    fileUs: m.file,
    testUs: m.test,
    endTestUs: m.endTest,
    /** Everything this package adds to a 2-query test in isolation "test" (proxy + savepoint + rollback). */
    overheadUs: m.test - m.direct,
    /** The savepoint / rollback / sequence restore alone (test − file). */
    savepointUs: m.test - m.file,
  };
}

/**
 * Server-side cost of the statements that end a test, straight to Postgres in a transaction:
 * the savepoint rollback pair, and the sequence restore (one `SELECT setval(…), …` over every
 * sequence, as the sandbox builds it) sent as a simple query vs as a prepared statement.
 * Each minus a `SELECT 1` round trip. µs, medians.
 */
async function endOfTestStatements({ dbUrl, rounds = 30, per = 20 }) {
  const c = await connect({ connectionString: dbUrl });
  const lit = (v) => "'" + v.replace(/'/g, "''") + "'";
  const t = { select1: [], rollbackPair: [], setvalSimple: [], setvalPrepared: [] };
  let sequences = 0;
  try {
    await c.query('BEGIN');
    const rows = (await c.query(`SELECT format('%I.%I', schemaname, sequencename) AS n, last_value, start_value FROM pg_catalog.pg_sequences`)).rows;
    sequences = rows.length;
    const setval =
      'SELECT ' +
      rows.map((r) => (r.last_value === null ? `pg_catalog.setval(${lit(r.n)}, ${Number(r.start_value)}, false)` : `pg_catalog.setval(${lit(r.n)}, ${Number(r.last_value)}, true)`)).join(', ');
    const sql = { select1: 'SELECT 1', rollbackPair: 'ROLLBACK TO SAVEPOINT t; RELEASE SAVEPOINT t', setvalSimple: setval, setvalPrepared: setval };
    for (let r = -2; r < rounds; r++) {
      for (const k of Object.keys(t)) {
        for (let i = 0; i < per; i++) {
          await c.query('SAVEPOINT t');
          await c.query("INSERT INTO t05 (name) VALUES ('end-of-test')");
          if (k !== 'rollbackPair') await c.query('ROLLBACK TO SAVEPOINT t; RELEASE SAVEPOINT t');
          const a = now();
          if (k === 'setvalPrepared') await c.query({ name: 'bench_restore', text: sql[k] });
          else await c.query(sql[k]);
          if (r >= 0) t[k].push((now() - a) * 1000);
        }
      }
    }
  } finally {
    await c.query('ROLLBACK').catch(() => undefined);
    await c.end().catch(() => undefined);
  }
  const base = median(t.select1);
  return {
    sequences,
    roundTripUs: base,
    rollbackPairUs: median(t.rollbackPair) - base,
    setvalSimpleUs: median(t.setvalSimple) - base,
    setvalPreparedUs: median(t.setvalPrepared) - base,
  };
}

module.exports = { proxyOverhead, perTestOverhead, endOfTestStatements, startSandbox };

/**
 * `node bench/micro.js [samples]` (after `npm run build`): the proxy-overhead rows alone, on a
 * cluster of their own, in a few seconds — the quick check of the ≤ 30 µs target. Prints the
 * load average beside the figures: they mean something only on a quiet machine.
 */
async function main() {
  const os = require('os');
  const { dist, admin, dbUrl } = require('./common');
  const { findBinaries } = dist('server/binaries');
  const { startCluster, stopCluster } = dist('server/cluster');
  const bins = await findBinaries({ resolveFrom: [ROOT] });
  const cluster = await startCluster({ binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir });
  const live = [];
  const socketDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jestpg-micro-'));
  try {
    await admin(cluster.url, (c) => c.query('CREATE DATABASE bench_micro'));
    const r = await proxyOverhead({ dbUrl: dbUrl(cluster.url, 'bench_micro'), cluster, socketDir: path.join(socketDir, 's'), samples: Number(process.argv[2]) || 3000, track: (x) => live.push(x) });
    const rows = { tcp: 'in process, upstream over TCP', upstreamUnix: 'in process, upstream on the unix socket', thread: 'own thread (as in Jest), upstream on the unix socket', inTx: 'in a client transaction (no guard)', relay: 'a do-nothing relay (one more hop)', threadRelay: 'a do-nothing relay on its own thread (the floor)' };
    // This process's CPU per SELECT 1 (client and proxy; for the thread row, the sandbox thread too).
    const cpuKey = { tcp: 'sandbox', upstreamUnix: 'sandboxUpUnix', thread: 'threadUpUnix', inTx: 'sandboxTx', relay: 'relay', threadRelay: 'threadRelay' };
    for (const [k, label] of Object.entries(rows)) {
      const p = r[k];
      const cpu = r.cpu[cpuKey[k]].nodeUs;
      console.log(`${label.padEnd(55)} overhead p50 ${p.overheadP50.toFixed(1).padStart(6)} µs   (direct ${p.directP50.toFixed(1)} µs, through it ${p.proxyP50.toFixed(1)} µs; node CPU ${cpu.toFixed(1)} µs vs ${r.cpu.direct.nodeUs.toFixed(1)} µs direct)`);
    }
    console.log(`load average ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}`);
  } finally {
    for (const x of live) await x.close().catch(() => undefined);
    await stopCluster(cluster);
    fs.rmSync(socketDir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exitCode = 1;
  });
}
