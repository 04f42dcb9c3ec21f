-- Backfill the ledger for rows written before 0005_ledger: every credit grant and every settled,
-- charged spend row gets its entry (the postings of grantPostings / spendPostings), once. A row
-- that already has its entry is left alone, so running this on a database without such rows adds
-- nothing. A balance rebuilt from the book then counts money moved before the ledger existed.
WITH missing AS (
  SELECT g.id, g.tenant_id, g.amount_micro, g.created_at FROM credit_grants g
  WHERE NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.kind = 'grant' AND e.reference = g.id)
), entries AS (
  INSERT INTO journal_entries (tenant_id, kind, reference, created_at)
  SELECT tenant_id, 'grant', id, created_at FROM missing
  RETURNING id, reference
)
INSERT INTO postings (entry_id, account, amount_micro)
SELECT entries.id, line.account, line.amount_micro
FROM entries JOIN missing ON missing.id = entries.reference
CROSS JOIN LATERAL (VALUES
  ('tenant:' || missing.tenant_id || ':available', missing.amount_micro),
  ('platform:grants_issued', -missing.amount_micro)
) AS line(account, amount_micro);
--> statement-breakpoint
WITH missing AS (
  SELECT s.reservation_id, s.tenant_id, s.cost_micro, coalesce(s.settled_at, s.created_at) AS at FROM spend s
  WHERE s.settled AND NOT s.free AND s.cost_micro > 0
    AND NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.kind = 'spend' AND e.reference = s.reservation_id)
), entries AS (
  INSERT INTO journal_entries (tenant_id, kind, reference, created_at)
  SELECT tenant_id, 'spend', reservation_id, at FROM missing
  RETURNING id, reference
)
INSERT INTO postings (entry_id, account, amount_micro)
SELECT entries.id, line.account, line.amount_micro
FROM entries JOIN missing ON missing.reservation_id = entries.reference
CROSS JOIN LATERAL (VALUES
  ('tenant:' || missing.tenant_id || ':available', -missing.cost_micro),
  ('tenant:' || missing.tenant_id || ':spent', missing.cost_micro)
) AS line(account, amount_micro);
