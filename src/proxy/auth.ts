/**
 * Password checks for TCP clients. Unix-socket clients are trusted: the socket lives in the run's
 * private directory.
 *
 * - The sandbox's own user (the one in DATABASE_URL) gives the random per-run secret, by MD5,
 *   which every driver speaks (pg, postgres.js, libpq, JDBC); MD5's weaknesses do not matter for
 *   a random secret that only keeps other local users' processes out.
 * - Any other user is checked as the server would: the role must exist and may log in, and its
 *   own password is checked against what the server stores (pg_authid): an MD5 hash by MD5 (the
 *   run secret is accepted too), a SCRAM-SHA-256 verifier by SCRAM (RFC 5802/7677), the server
 *   side of it, as Postgres runs it. Without the right to read pg_authid (not a superuser), the
 *   run secret, as for the sandbox's own user.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

const md5 = (s: string | Buffer) => createHash('md5').update(s).digest('hex');

export function newSalt(): Buffer {
  return randomBytes(4);
}

/** The response a client computes: "md5" + md5(md5(password + user) + salt). */
export function md5Response(user: string, password: string, salt: Buffer): string {
  return 'md5' + md5(Buffer.concat([Buffer.from(md5(password + user)), salt]));
}

const same = (a: string, b: string) => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

export function checkMd5(user: string, password: string, salt: Buffer, answer: string): boolean {
  return same(md5Response(user, password, salt), answer);
}

/** The same check against a stored MD5 hash ("md5" + md5(password + user)) instead of the password. */
export function checkStoredMd5(stored: string, salt: Buffer, answer: string): boolean {
  return stored.startsWith('md5') && same('md5' + md5(Buffer.concat([Buffer.from(stored.slice(3)), salt])), answer);
}

/** What the server knows of a role that is not the sandbox's own. */
export interface RoleAuth {
  exists: boolean;
  canLogin: boolean;
  /** pg_authid.rolpassword: "md5…", "SCRAM-SHA-256$…", or null (none, or not readable). */
  password: string | null;
}

const hmac = (key: Buffer, text: string) => createHmac('sha256', key).update(text).digest();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

/**
 * The server side of one SCRAM-SHA-256 exchange, from a stored verifier
 * ("SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>", as in pg_authid).
 */
export class ScramServer {
  private readonly iterations: string;
  private readonly salt: string;
  private readonly storedKey: Buffer;
  private readonly serverKey: Buffer;
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';

  static parse(verifier: string): ScramServer | undefined {
    const m = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(verifier);
    return m ? new ScramServer(m[1], m[2], Buffer.from(m[3], 'base64'), Buffer.from(m[4], 'base64')) : undefined;
  }

  private constructor(iterations: string, salt: string, storedKey: Buffer, serverKey: Buffer) {
    this.iterations = iterations;
    this.salt = salt;
    this.storedKey = storedKey;
    this.serverKey = serverKey;
  }

  /** The client-first-message ("n,,n=,r=<nonce>"): the server-first-message, or undefined if malformed. */
  first(clientFirst: string): string | undefined {
    const m = /^[nyp][^,]*,[^,]*,(.*)$/.exec(clientFirst);
    if (!m) return undefined;
    this.clientFirstBare = m[1];
    const r = /(?:^|,)r=([^,]+)/.exec(this.clientFirstBare);
    if (!r) return undefined;
    this.nonce = r[1] + randomBytes(18).toString('base64');
    this.serverFirst = `r=${this.nonce},s=${this.salt},i=${this.iterations}`;
    return this.serverFirst;
  }

  /** The client-final-message: the server-final-message ("v=…") if the proof is right, else undefined. */
  final(clientFinal: string): string | undefined {
    const p = clientFinal.lastIndexOf(',p=');
    if (p < 0) return undefined;
    const withoutProof = clientFinal.slice(0, p);
    const r = /(?:^|,)r=([^,]+)/.exec(withoutProof);
    if (!r || r[1] !== this.nonce) return undefined;
    const proof = Buffer.from(clientFinal.slice(p + 3), 'base64');
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const signature = hmac(this.storedKey, authMessage);
    if (proof.length !== signature.length) return undefined;
    const clientKey = Buffer.alloc(proof.length);
    for (let i = 0; i < proof.length; i++) clientKey[i] = proof[i] ^ signature[i];
    if (!timingSafeEqual(sha256(clientKey), this.storedKey)) return undefined;
    return `v=${hmac(this.serverKey, authMessage).toString('base64')}`;
  }
}
