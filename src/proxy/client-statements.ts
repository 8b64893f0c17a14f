/**
 * One client's prepared statements and portals, private to it on the shared upstream: renamed
 * with the client's prefix (`jp<id>_name`, the unnamed one `jp<id>_u`), remembered as sent so
 * they can be parsed again where they were lost (a new upstream after the old one died, the
 * upstream's unnamed statement replaced by another client's, the side connection's unnamed
 * statement), and marked where they need the session's attention when they run (transaction
 * control, the virtual-backend functions, the side connection).
 */
import { countInjected, Kind, type Owner, type Unit, type Upstream } from './upstream';
import type { Statement } from './sql';
import * as m from './messages';

export class ClientStatements {
  /** Renamed statements this client has prepared (protocol and SQL level share the namespace). */
  readonly prepared = new Set<string>();
  /** Their Parse as sent upstream, to parse them again on a new upstream (after the old one was lost). */
  readonly parseFrames = new Map<string, Buffer>();
  /** The client's last Parse of the unnamed statement, to re-create it upstream when needed. */
  unnamedParse: Buffer | undefined;
  /** Statements / portals that are transaction control (BEGIN/COMMIT/ROLLBACK via the extended protocol). */
  readonly txStatements = new Map<string, Statement>();
  readonly txPortals = new Map<string, Statement>();
  /** Statements parsed for the side connection: their Parse, as the side's unnamed statement. */
  readonly sideStatements = new Map<string, Buffer>();
  /** Statements that need the clients' list when they run (pg_stat_activity, kill functions). */
  readonly activityStatements = new Set<string>();
  /** The upstream they were parsed on, and those not yet parsed again on the current one. */
  private gen = 0;
  private stale: Set<string> | undefined;
  /** Which of them the side connection's unnamed statement is (see onSide). */
  private sideCurrent: string | undefined;

  constructor(
    /** `jp<id>_`: every name of this client upstream starts with it. */
    readonly prefix: string,
    private readonly owner: Owner,
  ) {}

  /** The upstream name of the client's statement `name` ('' is the unnamed one). */
  key(name: string): string {
    return this.prefix + (name || 'u');
  }

  /** A named statement was parsed on the upstream: remembered as sent. */
  parsedNamed(up: Upstream, key: string, frame: Buffer): void {
    this.prepared.add(key);
    this.sameUpstream(up);
    this.parseFrames.set(key, frame);
    this.stale?.delete(key);
  }

  /** The unnamed statement was parsed on the upstream: it is this client's now. */
  parsedUnnamed(up: Upstream, frame: Buffer): void {
    this.unnamedParse = frame;
    up.unnamedOwner = this.owner;
  }

  /** A statement was parsed on the side connection: as its unnamed statement. */
  parsedOnSide(side: Upstream, key: string, frame: Buffer): void {
    this.sideStatements.set(key, Buffer.from(frame));
    side.unnamedOwner = this.owner;
    this.sideCurrent = key;
  }

  /** On the side connection, the statement `key` must be its unnamed one: parse it again if not. */
  onSide(side: Upstream, unit: Unit, key: string): void {
    if (side.unnamedOwner === this.owner && this.sideCurrent === key) return;
    const parse = this.sideStatements.get(key);
    if (parse === undefined) return; // unknown to us: the server answers as it would
    side.socket.write(parse);
    countInjected(unit, Kind.Parse);
    side.unnamedOwner = this.owner;
    this.sideCurrent = key;
  }

  /** A new upstream since this client's statements were parsed: all of them are to be parsed again. */
  private sameUpstream(up: Upstream): void {
    if (this.gen === up.gen) return;
    if (this.gen !== 0 && this.parseFrames.size) this.stale = new Set(this.parseFrames.keys());
    this.gen = up.gen;
  }

  /** The named statement `key` lived on an upstream that was lost: parse it again here first. */
  ensurePrepared(up: Upstream, unit: Unit, key: string): void {
    if (this.gen !== up.gen) this.sameUpstream(up);
    if (this.stale === undefined || !this.stale.delete(key)) return;
    const frame = this.parseFrames.get(key);
    if (frame === undefined) return;
    up.socket.write(frame);
    countInjected(unit, Kind.Parse);
  }

  /** The upstream's unnamed statement is someone else's now: parse ours again first. */
  ensureUnnamed(up: Upstream, unit: Unit): void {
    if (up.unnamedOwner === this.owner || this.unnamedParse === undefined) return;
    up.socket.write(this.unnamedParse);
    countInjected(unit, Kind.Parse);
    up.unnamedOwner = this.owner;
  }

  /** The client closes one of its statements: forgotten here; the name to close upstream. */
  close(up: Upstream, name: string): string {
    const key = this.key(name);
    this.prepared.delete(key);
    this.parseFrames.delete(key);
    this.txStatements.delete(key);
    this.sideStatements.delete(key);
    if (name) return key;
    // Close the upstream's unnamed statement only if it is this client's.
    const target = up.unnamedOwner === this.owner ? '' : key;
    this.unnamedParse = undefined;
    if (up.unnamedOwner === this.owner) up.unnamedOwner = undefined;
    return target;
  }

  /** DEALLOCATE of one (the SQL-level name) or all of them. */
  deallocate(name?: string): void {
    if (name === undefined) {
      this.prepared.clear();
      this.parseFrames.clear();
      return;
    }
    this.prepared.delete(this.prefix + name);
    this.parseFrames.delete(this.prefix + name);
  }

  /** The client is gone: close every statement it left on the upstream (one unit, ending with Sync). */
  closeAll(up: Upstream, unit: Unit): void {
    up.socket.cork();
    for (const name of this.prepared) {
      up.socket.write(m.close('S', name));
      countInjected(unit, Kind.Close);
    }
    up.expectUnit(unit);
    up.socket.write(m.syncFrame);
    up.socket.uncork();
    this.prepared.clear();
  }
}
