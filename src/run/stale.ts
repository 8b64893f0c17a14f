/**
 * Leftovers of runs whose main process and reaper are both gone (e.g. a container killed with
 * everything in it, then reused): run dirs, embedded cluster dirs, environment-only lock files.
 * Called at the start of every run; only removes what is provably dead.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { isPostmasterOf, pickRoot, stopCluster } from '../server/cluster';
import { isAlive, isSameProcess, startToken } from '../util/proc';
import type { RunManifest } from './manifest';

/** Younger than this, a dir may belong to a setup in progress. */
const GRACE_MS = 60_000;

export async function sweepStaleLocal(teardown: (m: RunManifest) => Promise<unknown>): Promise<string[]> {
  const tmp = os.tmpdir();
  const roots = [...new Set([tmp, await pickRoot()])];
  let names: string[] = [];
  try {
    names = await fsp.readdir(tmp);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const p = path.join(tmp, name);
    try {
      if (await sweptRunFile(name, p, teardown)) removed.push(p);
    } catch {
      // best effort
    }
  }
  for (const root of roots) removed.push(...(await sweepClusterDirs(root)));
  return removed;
}

async function olderThanGrace(p: string): Promise<boolean> {
  try {
    return Date.now() - (await fsp.stat(p)).mtimeMs > GRACE_MS;
  } catch {
    return false;
  }
}

/** Remove `p` (an entry of the temp dir named `name`) if it is a dead run's dir or main-process lock; whether it did. */
async function sweptRunFile(name: string, p: string, teardown: (m: RunManifest) => Promise<unknown>): Promise<boolean> {
  if (name.startsWith('jest-pg-run-')) return sweptRunDir(p, teardown);
  if (name.startsWith('jest-pg-main-')) return sweptMainLock(name, p);
  return false;
}

/** A run dir whose main process and reaper are gone: tear its run down, remove it. One without a manifest: once old. */
async function sweptRunDir(p: string, teardown: (m: RunManifest) => Promise<unknown>): Promise<boolean> {
  let m: RunManifest | undefined;
  try {
    m = JSON.parse(readFileSync(path.join(p, 'manifest.json'), 'utf8')) as RunManifest;
  } catch {
    m = undefined;
  }
  if (m) {
    // Another host (a /tmp shared between containers) cannot be judged by pids: leave it.
    if (m.host !== undefined && m.host !== os.hostname()) return false;
    if (isSameProcess(m.mainPid, m.mainStart) || (m.reaperPid && isAlive(m.reaperPid))) return false;
    await teardown(m);
  } else if (!(await olderThanGrace(p))) {
    return false;
  }
  await fsp.rm(p, { recursive: true, force: true });
  return true;
}

/** jest-pg-main-<pid>-<start token>.{lock,json} of a process that is gone. */
async function sweptMainLock(name: string, p: string): Promise<boolean> {
  const mm = /^jest-pg-main-(\d+)-([^.]+)\.(lock|json)$/.exec(name);
  if (!mm) return false;
  const pid = Number(mm[1]);
  const token = mm[2] === 'x' ? undefined : mm[2];
  if (isAlive(pid) && (token === undefined || startToken(pid) === token)) return false;
  await fsp.rm(p, { recursive: true, force: true });
  return true;
}

/** Cluster dirs under `root` whose postmaster is gone: stopped and removed. */
async function sweepClusterDirs(root: string): Promise<string[]> {
  const removed: string[] = [];
  let entries: string[] = [];
  try {
    entries = await fsp.readdir(root);
  } catch {
    return removed;
  }
  for (const name of entries) {
    if (!/^jest-pg-[A-Za-z0-9]{6}$/.test(name)) continue;
    const p = path.join(root, name);
    const dataDir = path.join(p, 'data');
    let pid = 0;
    let socket = '';
    try {
      const lines = readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n');
      pid = Number(lines[0]);
      socket = path.join(lines[4] ?? '', `.s.PGSQL.${lines[3]}`);
    } catch {
      // no pid file: never started, or stopped
    }
    if (pid && isPostmasterOf(pid, dataDir)) continue; // a live server: its run's reaper owns it
    if (socket && (await answers(socket))) continue; // live, in another pid namespace
    if (!(await olderThanGrace(p))) continue;
    await stopCluster({ pid, baseDir: p }).catch(() => undefined);
    removed.push(p);
  }
  return removed;
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(300, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}
