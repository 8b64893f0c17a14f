/** Small file helpers of a run: atomic JSON writes (manifest, lock info), tolerant reads. */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

/** Write JSON so a reader sees the old or the new file, never half of one (owner-only). */
export function writeJsonAtomic(file: string, value: unknown, pretty = false): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(value, null, pretty ? 2 : undefined), { mode: 0o600 });
  renameSync(tmp, file);
}

export function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

export function readJson(file: string): unknown {
  const t = readText(file);
  if (!t) return undefined;
  try {
    return JSON.parse(t);
  } catch {
    return undefined;
  }
}
