/**
 * Temporary objects per client. Every client shares the upstream's one session, so its temp
 * schema is shared too; on a real server each client's temp objects vanish when it disconnects.
 * After a client cycle that may have created some (its SQL names TEMP, TEMPORARY, pg_temp or VIEW
 * in a CREATE or SELECT INTO), the upstream's temp schema is listed (pipelined, before another
 * client runs): what is new belongs to that client, and is dropped, by oid, when it disconnects.
 */
import type { Upstream } from './upstream';

interface Owned {
  owner: object;
}

const LIST = `SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relnamespace = pg_catalog.pg_my_temp_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')`;

export class TempObjects {
  /** oid → the client that made it. */
  private readonly byOid = new Map<number, Owned>();

  /** List the temp schema; new objects are `owner`'s, vanished ones are forgotten. */
  scan(owner: object, up: Upstream): Promise<void> {
    return up.rows(LIST).then(
      (rows) => {
        const seen = new Set(rows.map(([oid]) => Number(oid)));
        for (const oid of this.byOid.keys()) if (!seen.has(oid)) this.byOid.delete(oid);
        for (const oid of seen) if (!this.byOid.has(oid)) this.byOid.set(oid, { owner });
      },
      () => undefined,
    );
  }

  has(owner: object): boolean {
    for (const o of this.byOid.values()) if (o.owner === owner) return true;
    return false;
  }

  /**
   * One statement that drops `owner`'s temporary objects still there (CASCADE, as the end of a
   * session does), and forgets them; undefined when it has none. It never fails: each drop is
   * in its own exception block, so it cannot abort the file's transaction.
   */
  dropSql(owner: object): string | undefined {
    const oids: number[] = [];
    for (const [oid, o] of this.byOid) {
      if (o.owner === owner) {
        oids.push(oid);
        this.byOid.delete(oid);
      }
    }
    if (oids.length === 0) return undefined;
    return (
      `DO $jestpg$DECLARE r record; BEGIN ` +
      `FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c WHERE c.oid = ANY ('{${oids.join(',')}}'::oid[]) AND c.relnamespace = pg_catalog.pg_my_temp_schema() LOOP ` +
      `BEGIN EXECUTE pg_catalog.format('DROP %s IF EXISTS %s CASCADE', CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END, r.name); ` +
      `EXCEPTION WHEN others THEN NULL; END; END LOOP; END$jestpg$`
    );
  }

  /** A new upstream: its temp schema is empty. */
  clear(): void {
    this.byOid.clear();
  }
}
