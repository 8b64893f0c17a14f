/**
 * The sandbox's listening sockets: loopback TCP (what DATABASE_URL names) and, given a private
 * directory, a unix socket beside it. Apart from the proxy so that its own thread can listen,
 * and tell the test's thread where, before it loads the proxy's modules (thread-main.ts).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export interface ConnectionInfo {
  url: string;
  host: string;
  port: number;
  /** '' when the sandbox listens on loopback TCP only. */
  socketDir: string;
  user: string;
  password: string;
  database: string;
}

export interface ListenOptions {
  /** Directory for the unix socket (private to the run); without one, loopback TCP only. */
  socketDir?: string;
  /** Password TCP clients must give (put in the URL). */
  secret: string;
  /** User and database names put in the URL. */
  user?: string;
  database?: string;
  /** Never keep the process alive. */
  unref?: boolean;
}

export interface Listening {
  servers: net.Server[];
  info: ConnectionInfo;
}

/** Listen; every accepted socket goes to `onConnection` (`viaUnix`: it came through the unix socket). */
export async function listen(opts: ListenOptions, onConnection: (socket: net.Socket, viaUnix: boolean) => void): Promise<Listening> {
  const servers: net.Server[] = [];
  try {
    const tcp = net.createServer((s) => onConnection(s, false));
    servers.push(tcp);
    await listening(tcp, (s) => s.listen(0, '127.0.0.1'));
    const port = (tcp.address() as net.AddressInfo).port;
    if (opts.socketDir) {
      fs.mkdirSync(opts.socketDir, { recursive: true, mode: 0o700 });
      const sockPath = path.join(opts.socketDir, `.s.PGSQL.${port}`);
      fs.rmSync(sockPath, { force: true });
      const unix = net.createServer((s) => onConnection(s, true));
      servers.push(unix);
      await listening(unix, (s) => s.listen(sockPath));
    }
    if (opts.unref) for (const s of servers) s.unref();
    const user = opts.user ?? 'postgres';
    const database = opts.database ?? 'postgres';
    const info: ConnectionInfo = {
      url: `postgres://${encodeURIComponent(user)}:${encodeURIComponent(opts.secret)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
      host: '127.0.0.1',
      port,
      socketDir: opts.socketDir ?? '',
      user,
      password: opts.secret,
      database,
    };
    return { servers, info };
  } catch (e) {
    for (const s of servers) s.close();
    throw e;
  }
}

/** Start `server` listening (`start` calls listen); resolves once it listens, rejects with its error. */
export function listening(server: net.Server, start: (s: net.Server) => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    start(server);
    server.once('listening', () => {
      server.off('error', reject);
      resolve();
    });
  });
}
