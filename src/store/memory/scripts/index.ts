import type { ScriptName } from '../../scripts.generated.js';
import { admit } from './admit.js';
import { budgetEvent } from './budget_event.js';
import { budgetFinalize } from './budget_finalize.js';
import { budgetReap } from './budget_reap.js';
import { credit } from './credit.js';
import { debit } from './debit.js';
import { epoch } from './epoch.js';
import { fencingCas } from './fencing_cas.js';
import { hydrate } from './hydrate.js';
import { leaseAcquire } from './lease_acquire.js';
import { leaseRelease } from './lease_release.js';
import { outboxAck } from './outbox_ack.js';
import { outboxRead } from './outbox_read.js';
import { poolGate } from './pool_gate.js';
import { rebase } from './rebase.js';
import type { Script } from './shared.js';
import { snapshot } from './snapshot.js';
import { tenantIndexMark } from './tenant_index_mark.js';
import { tenantIndexPage } from './tenant_index_page.js';
import { tenantIndexPrune } from './tenant_index_prune.js';

/**
 * The Lua scripts of lua/, step for step in TypeScript, for the embedded memory engine: one file
 * per script, named as in lua/ without the version, each porting the version the registry names.
 * Same arguments (strings), same replies, same arithmetic (every figure is an integer below 2^53,
 * so doubles are exact in both). The differential property test runs both on the same operation
 * sequences and requires identical replies; change a script here and in lua/ together.
 * Each function runs to completion synchronously, which is what makes it atomic.
 */
export const MEMORY_SCRIPTS: Record<ScriptName, Script> = {
  epoch,
  admit,
  budget_finalize: budgetFinalize,
  budget_reap: budgetReap,
  budget_event: budgetEvent,
  credit,
  debit,
  hydrate,
  snapshot,
  rebase,
  pool_gate: poolGate,
  lease_acquire: leaseAcquire,
  lease_release: leaseRelease,
  fencing_cas: fencingCas,
  outbox_read: outboxRead,
  outbox_ack: outboxAck,
  tenant_index_mark: tenantIndexMark,
  tenant_index_page: tenantIndexPage,
  tenant_index_prune: tenantIndexPrune,
};
