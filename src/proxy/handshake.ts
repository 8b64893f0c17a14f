/**
 * The start of a client connection, before any query: the untyped startup packets (SSLRequest,
 * CancelRequest, StartupMessage), the startup parameters as settings, the password exchange
 * (MD5 with the run secret or the role's stored hash, SCRAM-SHA-256 against the role's verifier)
 * and the welcome (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery).
 */
import { F, StartupCode } from './codes';
import * as m from './messages';
import { checkMd5, checkStoredMd5, newSalt, ScramServer, type RoleAuth } from './auth';
import { settingsSql, parseOptions } from './session-sql';
import { errors } from '../util/errors';

/** One untyped packet at the front of `buf`, or why there is none yet. */
export type StartupPacket =
  | { kind: 'partial' }
  /** Not a startup packet (a client that connected and hung up at once sends Terminate): close without answering, as Postgres does. */
  | { kind: 'invalid' }
  | { kind: 'encryption'; rest: Buffer }
  /** `target`: the pid and key it names (a request too short to carry them cancels nothing, and closes all the same). */
  | { kind: 'cancel'; target: [pid: number, key: number] | undefined }
  | { kind: 'startup'; params: Record<string, string>; rest: Buffer };

export function readStartupPacket(buf: Buffer): StartupPacket {
  if (buf.length < 8) return { kind: 'partial' };
  const len = buf.readInt32BE(0);
  if (len < 8 || len > 10000) return { kind: 'invalid' };
  if (buf.length < len) return { kind: 'partial' };
  const code = buf.readInt32BE(4);
  const body = buf.subarray(8, len);
  switch (code) {
    case StartupCode.SSLRequest:
    case StartupCode.GSSENCRequest:
      return { kind: 'encryption', rest: buf.subarray(len) };
    case StartupCode.CancelRequest:
      return { kind: 'cancel', target: body.length >= 8 ? [body.readInt32BE(0), body.readInt32BE(4)] : undefined };
    case StartupCode.Protocol3:
      return { kind: 'startup', params: readParams(body), rest: buf.subarray(len) };
    default:
      throw errors.protocol(`unsupported protocol version ${code >> 16}.${code & 0xffff}`);
  }
}

function readParams(body: Buffer): Record<string, string> {
  const params: Record<string, string> = {};
  let off = 0;
  while (off < body.length && body[off] !== 0) {
    const [k, a] = m.readCString(body, off, body.length);
    const [v, b] = m.readCString(body, a, body.length);
    params[k] = v;
    off = b;
  }
  return params;
}

/** Startup parameters that are not settings. */
const NOT_SETTINGS = new Set(['user', 'database', 'options', 'replication']);

/**
 * Every startup parameter is a setting, as on a real server (and each `-c name=value` of
 * `options`); a client without application_name gets '' (not the sandbox's own).
 */
export function startupSettings(params: Record<string, string>): [string, string][] {
  const settings: [string, string][] = [['application_name', params.application_name ?? '']];
  for (const [k, v] of Object.entries(params)) {
    if (!NOT_SETTINGS.has(k) && k !== 'application_name') settings.push([k, v]);
  }
  for (const [k, v] of parseOptions(params.options ?? '')) settings.push([k, v]);
  return settings;
}

/** The frame that puts these settings in place on the upstream (RESET ALL first). */
export const settingsFrame = (settings: [string, string][]): Buffer => m.query(settingsSql(settings));

/**
 * The password exchange of a TCP client. `challenge` is what to send first; each `answer` either
 * asks for more (SCRAM's second step), or is done (the client is in), or throws the refusal.
 */
export class PasswordExchange {
  private readonly scram: ScramServer | undefined;
  private readonly salt: Buffer | undefined;
  private step = 0;
  readonly challenge: Buffer;

  /** `role`: what the server knows of the user (undefined: the sandbox's own user, or cannot tell: the run secret). */
  constructor(
    private readonly user: string,
    private readonly secret: string,
    private readonly role: RoleAuth | undefined,
  ) {
    this.scram = role?.password?.startsWith('SCRAM-SHA-256$') ? ScramServer.parse(role.password) : undefined;
    if (this.scram) this.challenge = m.authSasl();
    else {
      this.salt = newSalt();
      this.challenge = m.authMd5(this.salt);
    }
  }

  /** A role that does not exist or may not log in is refused before any password. */
  static refusal(user: string, role: RoleAuth | undefined): Error | undefined {
    if (role && !role.exists) return errors.roleRefused('28000', `role "${user}" does not exist`, user);
    if (role && !role.canLogin) return errors.roleRefused('28000', `role "${user}" is not permitted to log in`, user);
    return undefined;
  }

  /** The client's PasswordMessage (or SASL response): what to send back, and whether the client is in. */
  answer(buf: Buffer, code: number, start: number, end: number): { reply?: Buffer; done: boolean } {
    if (code !== F.Password) throw errors.protocol(`expected a password message, got ${JSON.stringify(String.fromCharCode(code))}`);
    const refused = () => errors.roleRefused('28P01', `password authentication failed for user "${this.user}"`, this.user);
    if (this.scram) {
      // SASLInitialResponse (mechanism, length, client-first) then SASLResponse (client-final).
      if (this.step++ === 0) {
        const [mechanism, a] = m.readCString(buf, start + 5, end);
        const first = mechanism === 'SCRAM-SHA-256' ? this.scram.first(buf.toString('utf8', a + 4, end)) : undefined;
        if (first === undefined) throw refused();
        return { reply: m.authSaslContinue(first), done: false };
      }
      const last = this.scram.final(buf.toString('utf8', start + 5, end));
      if (last === undefined) throw refused();
      return { reply: m.authSaslFinal(last), done: true };
    }
    const [answer] = m.readCString(buf, start + 5, end);
    if (!this.salt) throw refused();
    if (checkMd5(this.user, this.secret, this.salt, answer)) return { done: true };
    const stored = this.role?.password;
    if (stored && checkStoredMd5(stored, this.salt, answer)) return { done: true };
    throw this.role ? refused() : errors.authFailed(this.user);
  }
}

/** What a server says once a client is in: its parameters (GUC_REPORT ones with the client's own values), its key, ready. */
export function welcomeFrames(params: Record<string, string>, serverParams: ReadonlyMap<string, string>, pid: number, key: number): Buffer {
  const parts: Buffer[] = [m.authOk];
  for (const [k, v] of serverParams) parts.push(m.parameterStatus(k, params[k] ?? v));
  parts.push(m.parameterStatus('application_name', params.application_name ?? ''));
  if (params.search_path !== undefined) parts.push(m.parameterStatus('search_path', params.search_path));
  parts.push(m.backendKeyData(pid, key), m.readyForQuery('I'));
  return Buffer.concat(parts);
}
