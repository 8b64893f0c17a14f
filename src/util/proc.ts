/** Process liveness helpers that survive pid reuse and zombies. */
import { readFileSync } from 'node:fs';

/** Is `pid` alive? Zombies (exited, not yet reaped) count as dead. */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (process.platform === 'linux') {
    const st = procStat(pid);
    if (!st) return false;
    if (st.state === 'Z' || st.state === 'X') return false;
  }
  return true;
}

/**
 * A token identifying one incarnation of a pid (its start time in clock ticks since boot, on
 * Linux), so a recycled pid is not mistaken for the process we watch. undefined elsewhere.
 */
export function startToken(pid: number): string | undefined {
  return process.platform === 'linux' ? procStat(pid)?.start : undefined;
}

/** Alive and, when a token was recorded, still the same incarnation. */
export function isSameProcess(pid: number, token: string | undefined): boolean {
  if (!isAlive(pid)) return false;
  return token === undefined || startToken(pid) === undefined || startToken(pid) === token;
}

function procStat(pid: number): { state: string; start: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    return { state: rest[0], start: rest[19] };
  } catch {
    return undefined;
  }
}

/** The command line of a pid (Linux), for sanity checks before signalling. */
export function cmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return undefined;
  }
}
