/**
 * Password check for TCP clients: MD5, which every driver speaks (pg, postgres.js,
 * libpq, JDBC). Unix-socket clients are trusted: the socket lives in the run's private
 * directory. The password is a random per-run secret, so MD5's weaknesses do not matter
 * here; it only keeps other local users' processes out.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const md5 = (s: string | Buffer) => createHash('md5').update(s).digest('hex');

export function newSalt(): Buffer {
  return randomBytes(4);
}

/** The response a client computes: "md5" + md5(md5(password + user) + salt). */
export function md5Response(user: string, password: string, salt: Buffer): string {
  return 'md5' + md5(Buffer.concat([Buffer.from(md5(password + user)), salt]));
}

export function checkMd5(user: string, password: string, salt: Buffer, answer: string): boolean {
  const want = Buffer.from(md5Response(user, password, salt));
  const got = Buffer.from(answer);
  return want.length === got.length && timingSafeEqual(want, got);
}
