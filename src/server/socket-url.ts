/** How this package reaches its own embedded cluster (apart from cluster.ts: light, loaded by every worker). */
import type { ClusterInfo } from './cluster';

/**
 * A database of the cluster over its unix socket (trust: the socket's directory is private to
 * the run), for this package's own connections: no TCP stack, no password exchange (SCRAM costs
 * both sides a few ms per connection). `url` stays the TCP one, for users and reports.
 */
export function socketUrl(c: Pick<ClusterInfo, 'user' | 'port' | 'socketDir'>, database: string): string {
  return `postgres://${encodeURIComponent(c.user)}@localhost:${c.port}/${encodeURIComponent(database)}?host=${encodeURIComponent(c.socketDir)}`;
}
