/**
 * Opens the sandbox's upstream connection ourselves: socket (unix or TCP), TLS when the URL asks
 * for it, StartupMessage, authentication (trust, cleartext, MD5, SCRAM-SHA-256), then
 * ParameterStatus and BackendKeyData up to the first ReadyForQuery
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP).
 * The caller gets a quiet socket positioned after that ReadyForQuery; no driver's private
 * fields are involved, so any pg 8.x (a peer dependency) will do for the rest of the package.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { B, F, StartupCode } from './codes';
import { FrameError, Framer } from './framer';
import { readFields, writer } from './messages';
import { SCRAM_SHA_256, ScramError, scramClient, type ScramClient } from './scram';

export type SslMode = 'disable' | 'allow' | 'prefer' | 'require' | 'verify-ca' | 'verify-full';

/** What a connection URL names. */
export interface Target {
  /** A host name or address, or (starting with `/`) a unix socket directory. */
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  database: string;
  sslmode: SslMode;
  sslrootcert?: string;
  sslcert?: string;
  sslkey?: string;
  /** Startup `options` (e.g. `-c search_path=app`). */
  options?: string;
}

export interface Connected {
  socket: net.Socket;
  backendPid: number;
  secretKey: number;
  /** ParameterStatus values reported during startup (server_version, TimeZone, …). */
  params: Map<string, string>;
  /** Where a CancelRequest for this backend goes. */
  cancelTarget: net.NetConnectOpts;
  /** Whether the connection is encrypted. */
  tls: boolean;
}

/** A failed connection attempt; `code` is the server's SQLSTATE when it sent an ErrorResponse. */
export class ConnectError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'ConnectError';
  }
}

const SSL_MODES: readonly SslMode[] = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'];

/**
 * Parse a `postgres://` / `postgresql://` URL as libpq does for the parts the sandbox needs:
 * user, password, host (or `?host=` for a socket directory), port, database, `sslmode`
 * (`ssl=true` as node-postgres reads it: verify-full), `sslrootcert`/`sslcert`/`sslkey`, `options`.
 */
export function parseUrl(url: string): Target {
  let u: URL;
  try {
    // libpq accepts credentials before an empty host (postgres://user@/db?host=/run/postgresql);
    // Node's URL parser does not: the host is then the default, or ?host=.
    u = new URL(url.replace(/^(postgres(?:ql)?:\/\/[^/?#@]*@)(?=[/?#]|$)/, '$1localhost'));
  } catch {
    throw new ConnectError('not a postgres:// URL');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new ConnectError(`unsupported URL scheme ${JSON.stringify(u.protocol)} (postgres:// or postgresql://)`);
  const q = u.searchParams;
  const dec = (s: string) => decodeURIComponent(s);
  const host = q.get('host') ?? (u.hostname ? dec(u.hostname).replace(/^\[(.*)\]$/, '$1') : 'localhost');
  const port = Number(q.get('port') ?? (u.port || 5432));
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new ConnectError(`bad port ${JSON.stringify(q.get('port') ?? u.port)}`);
  const user = q.get('user') ?? (u.username ? dec(u.username) : os.userInfo().username);
  const password = q.get('password') ?? (u.password ? dec(u.password) : undefined);
  const database = q.get('dbname') ?? q.get('database') ?? (dec(u.pathname.replace(/^\//, '')) || user);
  let sslmode: SslMode = 'disable';
  const mode = q.get('sslmode');
  const ssl = q.get('ssl');
  if (mode !== null) {
    if (mode === 'no-verify') sslmode = 'require'; // node-postgres' spelling
    else if ((SSL_MODES as readonly string[]).includes(mode)) sslmode = mode as SslMode;
    else throw new ConnectError(`bad sslmode ${JSON.stringify(mode)} (one of ${SSL_MODES.join(', ')})`);
  } else if (ssl === 'true' || ssl === '1') sslmode = 'verify-full';
  const t: Target = { host, port, user, password, database, sslmode };
  for (const k of ['sslrootcert', 'sslcert', 'sslkey', 'options'] as const) {
    const v = q.get(k);
    if (v !== null) t[k] = v;
  }
  return t;
}

/** Where a CancelRequest for a backend of `t` goes. */
export function cancelTargetOf(t: Target): net.NetConnectOpts {
  return t.host.startsWith('/') ? { path: path.join(t.host, `.s.PGSQL.${t.port}`) } : { host: t.host, port: t.port };
}

/**
 * Connect and authenticate. Resolves with the socket paused right after the first
 * ReadyForQuery (any bytes read past it are pushed back onto the socket). Rejects with a
 * ConnectError that says which step failed; the socket is destroyed then.
 */
export function connect(url: string, opts: { applicationName: string; timeoutMs?: number }): Promise<Connected> {
  let target: Target;
  try {
    target = parseUrl(url);
  } catch (e) {
    return Promise.reject(e);
  }
  return connectTarget(target, opts);
}

export function connectTarget(t: Target, opts: { applicationName: string; timeoutMs?: number }): Promise<Connected> {
  return new Promise<Connected>((resolve, reject) => new Attempt(t, opts.applicationName, opts.timeoutMs ?? 10_000, resolve, reject));
}

/**
 * One connection attempt, in its steps: the socket, TLS when asked (SSLRequest, handshake), the
 * StartupMessage, then the server's messages up to the first ReadyForQuery. Settled once: with
 * the connection, or with a ConnectError naming the step (the socket destroyed then).
 */
class Attempt {
  private step: string;
  private socket: net.Socket;
  private settled = false;
  private encrypted = false;
  private readonly timer: NodeJS.Timeout;
  private readonly where: string;
  private readonly framer = new Framer();
  private readonly params = new Map<string, string>();
  private backendPid = 0;
  private secretKey = 0;
  private scram: ScramClient | undefined;
  private readonly onError = (e: Error) => this.fail(new ConnectError(`${this.step}: ${e.message}`, (e as { code?: string }).code));
  private readonly onClose = () => this.fail(new ConnectError(`the server closed the connection while ${this.step}`));
  private readonly onData = (chunk: Buffer) => this.read(chunk);

  constructor(
    private readonly t: Target,
    private readonly applicationName: string,
    timeoutMs: number,
    private readonly resolve: (c: Connected) => void,
    private readonly reject: (e: Error) => void,
  ) {
    const unix = t.host.startsWith('/');
    this.where = unix ? `socket ${path.join(t.host, `.s.PGSQL.${t.port}`)}` : `${t.host}:${t.port}`;
    this.step = `connecting to ${this.where}`;
    // No Nagle on TCP (as libpq and node-postgres): a statement written after a small one must not
    // wait for the server's ACK of it.
    this.socket = unix ? net.connect({ path: path.join(t.host, `.s.PGSQL.${t.port}`) }) : net.connect({ host: t.host, port: t.port, noDelay: true });
    this.timer = setTimeout(() => this.fail(new ConnectError(`timed out after ${timeoutMs} ms ${this.step}`)), timeoutMs);
    this.socket.on('error', this.onError);
    this.socket.on('close', this.onClose);
    this.socket.once('connect', () => (unix || t.sslmode === 'disable' || t.sslmode === 'allow' ? this.startup() : this.askTls()));
  }

  private fail(e: Error): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.timer);
    this.socket.destroy();
    this.reject(e);
  }

  /** SSLRequest: 'S' goes on with TLS, 'N' without it when sslmode=prefer. */
  private askTls(): void {
    this.step = 'asking for TLS (SSLRequest)';
    this.socket.once('data', (answer: Buffer) => {
      if (answer.length !== 1) return this.fail(new ConnectError(`unexpected answer to SSLRequest (${answer.length} bytes)`));
      if (answer[0] === 0x53 /* S */) return this.startTls();
      if (answer[0] === 0x4e /* N */) {
        if (this.t.sslmode === 'prefer') return this.startup();
        return this.fail(new ConnectError(`the server does not accept TLS connections, and the URL says sslmode=${this.t.sslmode}`));
      }
      this.fail(new ConnectError(`unexpected answer to SSLRequest: ${JSON.stringify(String.fromCharCode(answer[0]))}`));
    });
    this.socket.write(writer.int32(StartupCode.SSLRequest).flush(0));
  }

  private startTls(): void {
    const t = this.t;
    this.step = `negotiating TLS with ${this.where}`;
    let ca: Buffer | undefined;
    let cert: Buffer | undefined;
    let key: Buffer | undefined;
    try {
      if (t.sslrootcert && t.sslrootcert !== 'system') ca = readFileSync(t.sslrootcert);
      if (t.sslcert) cert = readFileSync(t.sslcert);
      if (t.sslkey) key = readFileSync(t.sslkey);
    } catch (e) {
      return this.fail(new ConnectError(`reading a TLS file named in the URL: ${(e as Error).message}`));
    }
    const verify = t.sslmode === 'verify-ca' || t.sslmode === 'verify-full';
    const raw = this.socket;
    raw.removeListener('error', this.onError);
    raw.removeListener('close', this.onClose);
    const secure = tls.connect({
      socket: raw,
      servername: net.isIP(t.host) ? undefined : t.host,
      ca,
      cert,
      key,
      rejectUnauthorized: verify,
      // verify-ca: the chain is checked, the host name is not (libpq's meaning).
      checkServerIdentity: t.sslmode === 'verify-full' ? tls.checkServerIdentity : () => undefined,
    });
    this.socket = secure;
    secure.on('error', this.onError);
    secure.on('close', this.onClose);
    secure.once('secureConnect', () => {
      this.encrypted = true;
      this.startup();
    });
  }

  private startup(): void {
    const t = this.t;
    this.step = `starting up as user "${t.user}", database "${t.database}"`;
    const w = writer.int32(StartupCode.Protocol3).cstring('user').cstring(t.user).cstring('database').cstring(t.database);
    w.cstring('application_name').cstring(this.applicationName);
    if (t.options) w.cstring('options').cstring(t.options);
    this.socket.write(w.byte(0).flush(0));
    this.socket.on('data', this.onData);
  }

  private read(chunk: Buffer): void {
    if (this.settled) return;
    try {
      this.framer.push(chunk, (buf, code, start, end) => {
        if (!this.settled) this.message(buf, code, start, end);
      });
    } catch (e) {
      if (e instanceof ConnectError) return this.fail(e);
      if (e instanceof ScramError) return this.fail(new ConnectError(`SCRAM authentication failed: ${e.message}`));
      if (e instanceof FrameError) return this.fail(new ConnectError(`malformed message from the server: ${e.message}`));
      this.fail(e as Error);
    }
  }

  /** A server message during startup (throws a ConnectError for what ends the attempt). */
  private message(buf: Buffer, code: number, start: number, end: number): void {
    switch (code) {
      case B.Authentication:
        return this.authentication(buf, start, end);
      case B.ParameterStatus: {
        const [k, v] = buf.toString('utf8', start + 5, end - 1).split('\0');
        this.params.set(k, v);
        return;
      }
      case B.BackendKeyData:
        this.backendPid = buf.readInt32BE(start + 5);
        this.secretKey = buf.readInt32BE(start + 9);
        return;
      case B.ErrorResponse: {
        const f = readFields(buf, start, end);
        throw new ConnectError(`${f.M ?? 'error'} (SQLSTATE ${f.C ?? '?'}, while ${this.step})`, f.C);
      }
      case B.ReadyForQuery:
        // Bytes after it (none expected) go back to the socket for the next reader.
        return this.ready(buf, end);
      case B.NoticeResponse:
      case B.NegotiateProtocolVersion:
        return;
      default:
        throw new ConnectError(`unexpected message ${JSON.stringify(String.fromCharCode(code))} while ${this.step}`);
    }
  }

  private authentication(buf: Buffer, start: number, end: number): void {
    const t = this.t;
    const send = (b: Buffer) => void this.socket.write(b);
    const kind = buf.readInt32BE(start + 5);
    switch (kind) {
      case 0: // AuthenticationOk
        this.step = 'waiting for the server to be ready';
        return;
      case 3: // AuthenticationCleartextPassword
        return send(writer.cstring(this.password()).flush(F.Password));
      case 5: {
        // AuthenticationMD5Password: "md5" + md5(md5(password + user) + salt)
        const salt = buf.subarray(start + 9, start + 13);
        const inner = createHash('md5').update(this.password() + t.user).digest('hex');
        const outer = createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex');
        return send(writer.cstring('md5' + outer).flush(F.Password));
      }
      case 10: {
        // AuthenticationSASL: a list of mechanisms
        const mechanisms = buf.toString('utf8', start + 9, end).split('\0').filter(Boolean);
        if (!mechanisms.includes(SCRAM_SHA_256)) throw new ConnectError(`the server offers SASL mechanisms ${mechanisms.join(', ')}; only ${SCRAM_SHA_256} is supported`);
        this.scram = scramClient(this.password());
        const first = Buffer.from(this.scram.first);
        this.step = 'authenticating (SCRAM-SHA-256)';
        return send(writer.cstring(SCRAM_SHA_256).int32(first.length).bytes(first).flush(F.Password));
      }
      case 11: // AuthenticationSASLContinue
        if (!this.scram) throw new ConnectError('SASLContinue before SASL');
        return send(writer.bytes(Buffer.from(this.scram.final(buf.toString('utf8', start + 9, end)))).flush(F.Password));
      case 12: // AuthenticationSASLFinal
        if (!this.scram) throw new ConnectError('SASLFinal before SASL');
        return this.scram.verify(buf.toString('utf8', start + 9, end));
      default:
        throw new ConnectError(`the server asks for an authentication method this package does not speak (code ${kind}: 2 Kerberos, 7 GSSAPI, 9 SSPI); use password, md5 or scram-sha-256 in pg_hba.conf`);
    }
  }

  private password(): string {
    const p = this.t.password ?? pgpass(this.t);
    if (p === undefined) {
      throw new ConnectError(`the server asks for a password for user "${this.t.user}" and none was given: put it in the URL (postgres://user:password@host/db) or in ~/.pgpass`);
    }
    return p;
  }

  /** The first ReadyForQuery: the socket is handed over, paused, with nothing of ours on it. */
  private ready(buf: Buffer, end: number): void {
    const socket = this.socket;
    this.settled = true;
    clearTimeout(this.timer);
    socket.removeListener('data', this.onData);
    socket.removeListener('error', this.onError);
    socket.removeListener('close', this.onClose);
    socket.pause();
    if (end < buf.length) socket.unshift(Buffer.from(buf.subarray(end)));
    this.resolve({ socket, backendPid: this.backendPid, secretKey: this.secretKey, params: this.params, cancelTarget: cancelTargetOf(this.t), tls: this.encrypted });
  }
}

/**
 * The password for `t` from the password file (PGPASSFILE or ~/.pgpass), as libpq reads it:
 * `host:port:database:user:password` lines, `*` matches anything, `\` escapes `:` and `\`, a unix
 * socket matches `localhost`; ignored when group or others may read it.
 */
export function pgpass(t: Target, file = process.env.PGPASSFILE ?? path.join(os.homedir(), '.pgpass')): string | undefined {
  let text: string;
  try {
    if (process.platform !== 'win32' && (statSync(file).mode & 0o077) !== 0) return undefined;
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const host = t.host.startsWith('/') ? 'localhost' : t.host;
  const want = [host, String(t.port), t.database, t.user];
  for (const line of text.split(/\r?\n/)) {
    if (!line || line.startsWith('#')) continue;
    const fields: string[] = [];
    let cur = '';
    for (let i = 0; i < line.length; i++) {
      const ch = line[i];
      if (ch === '\\' && i + 1 < line.length) cur += line[++i];
      else if (ch === ':' && fields.length < 4) {
        fields.push(cur);
        cur = '';
      } else cur += ch;
    }
    fields.push(cur);
    if (fields.length !== 5) continue;
    if (want.every((w, i) => fields[i] === '*' || fields[i] === w)) return fields[4];
  }
  return undefined;
}
