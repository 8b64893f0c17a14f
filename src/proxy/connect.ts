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
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const unix = t.host.startsWith('/');
  const where = unix ? `socket ${path.join(t.host, `.s.PGSQL.${t.port}`)}` : `${t.host}:${t.port}`;
  return new Promise<Connected>((resolve, reject) => {
    let step = `connecting to ${where}`;
    let socket: net.Socket = unix ? net.connect({ path: path.join(t.host, `.s.PGSQL.${t.port}`) }) : net.connect({ host: t.host, port: t.port });
    let settled = false;
    let encrypted = false;
    const timer = setTimeout(() => fail(new ConnectError(`timed out after ${timeoutMs} ms ${step}`)), timeoutMs);
    const fail = (e: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(e);
    };
    const onError = (e: Error) => fail(new ConnectError(`${step}: ${e.message}`, (e as { code?: string }).code));
    const onClose = () => fail(new ConnectError(`the server closed the connection while ${step}`));
    socket.on('error', onError);
    socket.on('close', onClose);

    socket.once('connect', () => {
      if (unix || t.sslmode === 'disable' || t.sslmode === 'allow') return startup();
      step = 'asking for TLS (SSLRequest)';
      socket.once('data', (answer: Buffer) => {
        if (answer.length !== 1) return fail(new ConnectError(`unexpected answer to SSLRequest (${answer.length} bytes)`));
        if (answer[0] === 0x53 /* S */) return startTls();
        if (answer[0] === 0x4e /* N */) {
          if (t.sslmode === 'prefer') return startup();
          return fail(new ConnectError(`the server does not accept TLS connections, and the URL says sslmode=${t.sslmode}`));
        }
        fail(new ConnectError(`unexpected answer to SSLRequest: ${JSON.stringify(String.fromCharCode(answer[0]))}`));
      });
      socket.write(writer.int32(StartupCode.SSLRequest).flush(0));
    });

    function startTls(): void {
      step = `negotiating TLS with ${where}`;
      let ca: Buffer | undefined;
      let cert: Buffer | undefined;
      let key: Buffer | undefined;
      try {
        if (t.sslrootcert && t.sslrootcert !== 'system') ca = readFileSync(t.sslrootcert);
        if (t.sslcert) cert = readFileSync(t.sslcert);
        if (t.sslkey) key = readFileSync(t.sslkey);
      } catch (e) {
        return fail(new ConnectError(`reading a TLS file named in the URL: ${(e as Error).message}`));
      }
      const verify = t.sslmode === 'verify-ca' || t.sslmode === 'verify-full';
      const raw = socket;
      raw.removeListener('error', onError);
      raw.removeListener('close', onClose);
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
      socket = secure;
      socket.on('error', onError);
      socket.on('close', onClose);
      secure.once('secureConnect', () => {
        encrypted = true;
        startup();
      });
    }

    function startup(): void {
      step = `starting up as user "${t.user}", database "${t.database}"`;
      const w = writer.int32(StartupCode.Protocol3).cstring('user').cstring(t.user).cstring('database').cstring(t.database);
      w.cstring('application_name').cstring(opts.applicationName);
      if (t.options) w.cstring('options').cstring(t.options);
      socket.write(w.byte(0).flush(0));
      const framer = new Framer();
      const params = new Map<string, string>();
      let backendPid = 0;
      let secretKey = 0;
      let scram: ScramClient | undefined;

      const password = (): string => {
        const p = t.password ?? pgpass(t);
        if (p === undefined) {
          throw new ConnectError(`the server asks for a password for user "${t.user}" and none was given: put it in the URL (postgres://user:password@host/db) or in ~/.pgpass`);
        }
        return p;
      };
      const send = (b: Buffer) => socket.write(b);

      const Authentication = (buf: Buffer, start: number, end: number) => {
        const kind = buf.readInt32BE(start + 5);
        switch (kind) {
          case 0: // AuthenticationOk
            step = 'waiting for the server to be ready';
            return;
          case 3: // AuthenticationCleartextPassword
            return send(writer.cstring(password()).flush(F.Password));
          case 5: {
            // AuthenticationMD5Password: "md5" + md5(md5(password + user) + salt)
            const salt = buf.subarray(start + 9, start + 13);
            const inner = createHash('md5').update(password() + t.user).digest('hex');
            const outer = createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex');
            return send(writer.cstring('md5' + outer).flush(F.Password));
          }
          case 10: {
            // AuthenticationSASL: a list of mechanisms
            const mechanisms = buf.toString('utf8', start + 9, end).split('\0').filter(Boolean);
            if (!mechanisms.includes(SCRAM_SHA_256)) throw new ConnectError(`the server offers SASL mechanisms ${mechanisms.join(', ')}; only ${SCRAM_SHA_256} is supported`);
            scram = scramClient(password());
            const first = Buffer.from(scram.first);
            step = 'authenticating (SCRAM-SHA-256)';
            return send(writer.cstring(SCRAM_SHA_256).int32(first.length).bytes(first).flush(F.Password));
          }
          case 11: // AuthenticationSASLContinue
            if (!scram) throw new ConnectError('SASLContinue before SASL');
            return send(writer.bytes(Buffer.from(scram.final(buf.toString('utf8', start + 9, end)))).flush(F.Password));
          case 12: // AuthenticationSASLFinal
            if (!scram) throw new ConnectError('SASLFinal before SASL');
            return scram.verify(buf.toString('utf8', start + 9, end));
          default:
            throw new ConnectError(`the server asks for an authentication method this package does not speak (code ${kind}: 2 Kerberos, 7 GSSAPI, 9 SSPI); use password, md5 or scram-sha-256 in pg_hba.conf`);
        }
      };
      const ParameterStatus = (buf: Buffer, start: number, end: number) => {
        const [k, v] = buf.toString('utf8', start + 5, end - 1).split('\0');
        params.set(k, v);
      };
      const BackendKeyData = (buf: Buffer, start: number) => {
        backendPid = buf.readInt32BE(start + 5);
        secretKey = buf.readInt32BE(start + 9);
      };
      const ErrorResponse = (buf: Buffer, start: number, end: number) => {
        const f = readFields(buf, start, end);
        throw new ConnectError(`${f.M ?? 'error'} (SQLSTATE ${f.C ?? '?'}, while ${step})`, f.C);
      };
      const ReadyForQuery = (buf: Buffer, end: number) => {
        settled = true;
        clearTimeout(timer);
        socket.removeListener('data', onData);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
        socket.pause();
        if (end < buf.length) socket.unshift(Buffer.from(buf.subarray(end)));
        resolve({ socket, backendPid, secretKey, params, cancelTarget: cancelTargetOf(t), tls: encrypted });
      };

      const onData = (chunk: Buffer) => {
        if (settled) return;
        try {
          framer.push(chunk, (buf, code, start, end) => {
            if (settled) return;
            switch (code) {
              case B.Authentication:
                return Authentication(buf, start, end);
              case B.ParameterStatus:
                return ParameterStatus(buf, start, end);
              case B.BackendKeyData:
                return BackendKeyData(buf, start);
              case B.ErrorResponse:
                return ErrorResponse(buf, start, end);
              case B.ReadyForQuery:
                // Bytes after it (none expected) go back to the socket for the next reader.
                return ReadyForQuery(buf, end);
              case B.NoticeResponse:
              case B.NegotiateProtocolVersion:
                return;
              default:
                throw new ConnectError(`unexpected message ${JSON.stringify(String.fromCharCode(code))} while ${step}`);
            }
          });
        } catch (e) {
          if (e instanceof ConnectError) return fail(e);
          if (e instanceof ScramError) return fail(new ConnectError(`SCRAM authentication failed: ${e.message}`));
          if (e instanceof FrameError) return fail(new ConnectError(`malformed message from the server: ${e.message}`));
          fail(e as Error);
        }
      };
      socket.on('data', onData);
    }
  });
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
