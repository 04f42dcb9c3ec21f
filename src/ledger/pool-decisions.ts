import type { Db } from '../../db/index.js';
import { type PoolDecisionRow, poolDecisions } from '../../db/schema/index.js';
import type { Logger } from '../observability/logger.js';

/**
 * A pool-enforcement decision row (DESIGN.md §4), idempotent by reservation id. Written off the
 * request path: a failed insert is logged, never the caller's error.
 */
export function insertPoolDecision(db: Db, log: Logger, row: PoolDecisionRow): void {
  void db
    .insert(poolDecisions)
    .values(row)
    .onConflictDoNothing()
    .catch((error: unknown) =>
      log.warn({ err: error, reservationId: row.reservationId }, 'pool decision not recorded'),
    );
}
