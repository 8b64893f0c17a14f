/**
 * What a client's transaction control becomes on the shared upstream, given the client's state:
 * its transaction is the guard savepoint, so BEGIN opens nothing (the moving clock starts), COMMIT
 * releases nothing (deferred constraints fire, SET LOCALs are undone, the clock stops), ROLLBACK
 * goes back to the guard. Two-phase commit is played. Pure: the caller applies the effect.
 */
import type { Statement } from './sql';
import { CLOCK_BEGIN, CLOCK_END, FIRE_DEFERRED, NOOP, raising, resetLocals, ROLLBACK_GUARD, WARN_IN_TX, WARN_NO_TX } from './session-sql';
import { errors } from '../util/errors';

/** The client's side of it. */
export interface TxState {
  inTx: boolean;
  failed: boolean;
  /** Settings changed with SET LOCAL in the client's transaction. */
  localSettings: ReadonlySet<string>;
}

/** The sandbox's side of it. */
export interface TxServer {
  readonly clockMoves: boolean;
  readonly deferrable: boolean;
  readonly twoPhase: boolean;
  /** Identifiers prepared through the sandbox (PREPARE TRANSACTION adds, COMMIT/ROLLBACK PREPARED remove). */
  readonly preparedXacts: Set<string>;
}

export type TxEffect = 'begin' | 'end' | undefined;

export interface TxRewrite {
  /** The statement sent in its place. */
  sql: string;
  /** The command tag the client reads. */
  tag: string;
  effect: TxEffect;
  /** An error of it ends the client's transaction (a PREPARE TRANSACTION or COMMIT that fails). */
  endsOnError?: boolean;
  /** A statement of ours to run first (the deferred constraints' checks). */
  before?: string;
  /** It rolls the client's transaction back (what others wrote inside it goes too). */
  rollingBack?: boolean;
}

const tx = (sql: string, tag: string, effect: TxEffect, more?: Partial<TxRewrite>): TxRewrite => ({ sql, tag, effect, ...more });

/** A transaction-control statement (see isTxControl) as it runs on the upstream. */
export function txRewrite(s: Statement, state: TxState, server: TxServer): TxRewrite {
  switch (s.kind) {
    case 'begin':
      // The client's transaction time starts now (a moving clock: src/util/sql-clock.ts).
      return state.inTx ? tx(WARN_IN_TX, s.tag!, undefined) : tx(server.clockMoves ? CLOCK_BEGIN : NOOP, s.tag!, 'begin');
    case 'commit':
      return commit(state, server, 'COMMIT');
    case 'rollback':
      return state.inTx ? tx(ROLLBACK_GUARD, 'ROLLBACK', 'end', { rollingBack: true }) : tx(WARN_NO_TX, 'ROLLBACK', undefined);
    case 'prepareTx':
      return prepareTransaction(s, state, server);
    case 'commitPrepared':
    case 'rollbackPrepared':
      return finishPrepared(s, state, server);
    default:
      throw new Error(`not transaction control: ${s.kind}`);
  }
}

/** COMMIT: deferred constraints are checked, as in Postgres; one that fails ends the transaction (rolled back) with its error. */
function commit(state: TxState, server: TxServer, tag: 'COMMIT'): TxRewrite {
  if (!state.inTx) return tx(WARN_NO_TX, tag, undefined);
  if (state.failed) return tx(ROLLBACK_GUARD, 'ROLLBACK', 'end', { rollingBack: true });
  const check = server.deferrable ? FIRE_DEFERRED : undefined;
  return tx(endSql(state, server), tag, 'end', { endsOnError: !!check, before: check });
}

/** What ends a client transaction that keeps its work: SET LOCALs undone, the clock stopped. */
function endSql(state: TxState, server: TxServer): string {
  if (state.localSettings.size) return resetLocals(server.clockMoves ? new Set([...state.localSettings, 'jestpg.now']) : state.localSettings);
  return server.clockMoves ? CLOCK_END : NOOP;
}

/**
 * Two-phase commit, played: nothing ever commits, so PREPARE TRANSACTION ends the client's
 * transaction as a COMMIT does (its work stays in the file's transaction, visible at once) and
 * records the identifier. Where the server has two-phase commit off, Postgres' own refusal.
 */
function prepareTransaction(s: Statement, state: TxState, server: TxServer): TxRewrite {
  const gid = s.gid ?? '';
  if (!state.inTx) return tx(WARN_NO_TX, 'ROLLBACK', undefined);
  if (!server.twoPhase) {
    const err = errors.twoPhase('55000', 'prepared transactions are disabled', 'the server has max_prepared_transactions = 0, so PREPARE TRANSACTION fails there too; the transaction was rolled back.', 'Set max_prepared_transactions to a nonzero value.');
    return tx(raising(err), 'ROLLBACK', undefined, { endsOnError: true });
  }
  if (state.failed) return tx(ROLLBACK_GUARD, 'ROLLBACK', 'end', { rollingBack: true });
  if (server.preparedXacts.has(gid)) {
    const err = errors.twoPhase('42710', `transaction identifier "${gid}" is already in use`, `"${gid}" was prepared earlier through the sandbox and not committed yet.`);
    return tx(raising(err), 'ROLLBACK', undefined, { endsOnError: true });
  }
  server.preparedXacts.add(gid);
  // Ends like a COMMIT (src/util/sql-clock.ts: the transaction's time ends too).
  return tx(endSql(state, server), 'PREPARE TRANSACTION', 'end');
}

/** COMMIT PREPARED of a played one succeeds; ROLLBACK PREPARED cannot undo it and is refused. */
function finishPrepared(s: Statement, state: TxState, server: TxServer): TxRewrite {
  const gid = s.gid ?? '';
  const what = s.kind === 'commitPrepared' ? 'COMMIT PREPARED' : 'ROLLBACK PREPARED';
  if (state.inTx) return tx(raising(errors.twoPhase('25001', `${what} cannot run inside a transaction block`, `${what} runs outside a transaction, as in Postgres.`)), what, undefined);
  if (!server.preparedXacts.delete(gid)) {
    return tx(raising(errors.twoPhase('42704', `prepared transaction with identifier "${gid}" does not exist`, `no transaction "${gid}" was prepared through the sandbox.`)), what, undefined);
  }
  if (s.kind === 'commitPrepared') return tx(NOOP, what, undefined);
  const err = errors.unsupportedStatement(
    `ROLLBACK PREPARED of "${gid}" (prepared through the sandbox, its work is already part of the file's transaction and cannot be undone alone; the identifier is forgotten)`,
  );
  return tx(raising(err), what, undefined);
}
