import { createHash, randomBytes } from 'node:crypto';

/** Quote an SQL identifier. Every identifier the tool puts in SQL goes through here. */
export function ident(name: string): string {
  return '"' + name.replace(/"/g, '""') + '"';
}

/** Quote an SQL string literal (standard_conforming_strings on). */
export function literal(value: string): string {
  if (value.includes('\0')) throw new TypeError('NUL byte in SQL literal');
  return "'" + value.replace(/'/g, "''") + "'";
}

/** A short random run id: 8 lowercase hex characters. */
export function newRunId(): string {
  return randomBytes(4).toString('hex');
}

export function sha256(...parts: (string | Buffer)[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    h.update(typeof p === 'string' ? p : p);
    h.update('\0');
  }
  return h.digest('hex');
}

/** A 64-bit advisory lock key derived from a name (single-key form; the leases use the two-key form). */
export function lockKeyFor(name: string): string {
  return BigInt.asIntN(64, BigInt('0x' + sha256('jest-environment-pg lock', name).slice(0, 16))).toString();
}

/** `<prefix>_tpl_<hash>`: the template's name carries a hash of everything that shapes it. */
export function templateName(prefix: string, hash: string): string {
  return check(`${prefix}_tpl_${hash.slice(0, 16)}`);
}

/** `<prefix>_<run>_w<JEST_WORKER_ID>`. */
export function workerDbName(prefix: string, runId: string, workerId: string): string {
  if (!/^[0-9a-z]+$/i.test(workerId)) throw new TypeError(`bad worker id ${workerId}`);
  return check(`${prefix}_${runId}_w${workerId.toLowerCase()}`);
}

/**
 * The COMMENT every database the tool creates carries: the marker on the first line, then (for a
 * template whose migrations commented the database, and its clones) that comment. A template's
 * marker also says when a run last used it (`used=<unix seconds>`): old templates are swept by it.
 */
export function marker(runId: string | 'template', note?: string, usedAt?: number): string {
  const base = runId === 'template' ? `jest-environment-pg template${usedAt !== undefined ? ` used=${Math.floor(usedAt)}` : ''}` : `jest-environment-pg run=${runId}`;
  return note ? `${base}\n${note}` : base;
}

/** Parse a marker back (its first line); undefined when the comment is not ours. */
export function parseMarker(comment: string | null | undefined): { runId: string } | { template: true; usedAt?: number } | undefined {
  if (!comment) return undefined;
  const first = comment.split('\n', 1)[0];
  const t = /^jest-environment-pg template(?: used=(\d+))?$/.exec(first);
  if (t) return t[1] === undefined ? { template: true } : { template: true, usedAt: Number(t[1]) };
  const m = /^jest-environment-pg run=([0-9a-f]{8})$/.exec(first);
  return m ? { runId: m[1] } : undefined;
}

/** The user's part of a comment: what follows our marker's line, or the whole comment when it is not ours. */
export function noteOf(comment: string | null | undefined): string | undefined {
  if (!comment) return undefined;
  if (!parseMarker(comment)) return comment;
  const nl = comment.indexOf('\n');
  return nl < 0 ? undefined : comment.slice(nl + 1);
}

/** Two int4 keys for the run's lease advisory lock: a fixed namespace and the run id. */
export const LOCK_NAMESPACE = 0x4a504731; // "JPG1"
export function leaseKey(runId: string): [number, number] {
  return [LOCK_NAMESPACE, parseInt(runId, 16) | 0];
}

function check(name: string): string {
  if (Buffer.byteLength(name) > 63) throw new TypeError(`identifier too long: ${name}`);
  return name;
}
