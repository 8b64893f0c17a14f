/**
 * The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it
 * (https://www.postgresql.org/docs/current/sasl-authentication.html): no channel binding
 * (gs2 header `n,,`), the user name left to the startup packet (`n=*`).
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export const SCRAM_SHA_256 = 'SCRAM-SHA-256';

export class ScramError extends Error {}

export interface ScramClient {
  /** client-first-message, for SASLInitialResponse. */
  readonly first: string;
  /** client-final-message for the server-first-message (SASLContinue). */
  final(serverFirst: string): string;
  /** Check the server-final-message (SASLFinal): the server proves it knows the password too. */
  verify(serverFinal: string): void;
}

const hmac = (key: Buffer, text: string) => createHmac('sha256', key).update(text).digest();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest();

function attributes(message: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of message.split(',')) {
    const eq = part.indexOf('=');
    if (eq === 1) out.set(part[0], part.slice(2));
  }
  return out;
}

/** `user` is `*` for Postgres (it takes the user from the startup packet); `nonce` is random unless given (tests). */
export function scramClient(password: string, nonce = randomBytes(18).toString('base64'), user = '*'): ScramClient {
  const firstBare = `n=${user.replace(/=/g, '=3D').replace(/,/g, '=2C')},r=${nonce}`;
  let authMessage = '';
  let saltedPassword: Buffer | undefined;
  return {
    first: `n,,${firstBare}`,
    final(serverFirst) {
      const a = attributes(serverFirst);
      const r = a.get('r');
      const s = a.get('s');
      const i = Number(a.get('i'));
      if (!r || !r.startsWith(nonce) || r.length === nonce.length) throw new ScramError('the server nonce does not extend ours');
      if (!s) throw new ScramError('the server sent no salt');
      if (!Number.isInteger(i) || i < 1) throw new ScramError(`bad iteration count ${JSON.stringify(a.get('i'))}`);
      saltedPassword = pbkdf2Sync(password, Buffer.from(s, 'base64'), i, 32, 'sha256');
      const clientKey = hmac(saltedPassword, 'Client Key');
      const withoutProof = `c=biws,r=${r}`;
      authMessage = `${firstBare},${serverFirst},${withoutProof}`;
      const signature = hmac(sha256(clientKey), authMessage);
      const proof = Buffer.alloc(clientKey.length);
      for (let k = 0; k < proof.length; k++) proof[k] = clientKey[k] ^ signature[k];
      return `${withoutProof},p=${proof.toString('base64')}`;
    },
    verify(serverFinal) {
      const a = attributes(serverFinal);
      if (a.has('e')) throw new ScramError(`the server refused: ${a.get('e')}`);
      const v = a.get('v');
      if (!saltedPassword || !v) throw new ScramError('the server sent no signature');
      const want = hmac(hmac(saltedPassword, 'Server Key'), authMessage);
      const got = Buffer.from(v, 'base64');
      if (got.length !== want.length || !timingSafeEqual(got, want)) throw new ScramError('the server signature does not match: this is not the server that knows the password');
    },
  };
}
