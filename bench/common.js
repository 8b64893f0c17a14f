'use strict';
/** Shared by bench/run.js and bench/profile.js: the one server, databases, child env. */
const fs = require('fs');
const path = require('path');
const { Client } = require('pg');

const ROOT = path.resolve(__dirname, '..');
const dist = (m) => require(path.join(ROOT, 'dist', m));
const JEST_BIN = path.join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js');

/** This process's env minus anything that would steer a child Jest run (ours or an outer one). */
function cleanEnv(extra) {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(JEST_|PG[A-Z]+$|DATABASE_URL$|BENCH_|NODE_OPTIONS$)/.test(k)) delete env[k];
  }
  return { ...env, FORCE_COLOR: '0', CI: 'true', ...extra };
}

function dbUrl(adminUrl, name) {
  const u = new URL(adminUrl);
  u.pathname = '/' + name;
  return u.toString();
}

async function admin(adminUrl, fn) {
  const c = new Client({ connectionString: adminUrl });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

const cloneSql = (name, tpl) => `CREATE DATABASE ${name} TEMPLATE ${tpl} STRATEGY FILE_COPY`;

/**
 * Boot one embedded cluster exactly as the package boots its own (same binaries, settings,
 * /dev/shm), and build `bench_tpl` from the migrations dir. `onCluster` gets the cluster as
 * soon as it runs, so the caller can stop it on failure.
 */
async function startServer(migrationsDir, onCluster) {
  const { findBinaries } = dist('server/binaries');
  const { startCluster } = dist('server/cluster');
  const bins = await findBinaries({ resolveFrom: [ROOT] });
  const cluster = await startCluster({ binDir: bins.binDir, version: bins.version, nativeDir: bins.nativeDir });
  onCluster(cluster);
  await admin(cluster.url, (c) => c.query('CREATE DATABASE bench_tpl'));
  const c = new Client({ connectionString: dbUrl(cluster.url, 'bench_tpl') });
  await c.connect();
  try {
    for (const f of fs.readdirSync(migrationsDir).sort()) await c.query(fs.readFileSync(path.join(migrationsDir, f), 'utf8'));
  } finally {
    await c.end();
  }
  return { bins, cluster, adminUrl: cluster.url, template: 'bench_tpl' };
}

module.exports = { ROOT, dist, JEST_BIN, cleanEnv, dbUrl, admin, cloneSql, startServer };
