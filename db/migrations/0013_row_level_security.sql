-- Hand-written: tenant isolation by PostgreSQL row-level security (db/scope.ts, docs/ledger.md).
-- Two roles the application becomes per transaction (SET LOCAL ROLE): neither logs in, owns a
-- table, is a superuser or bypasses RLS. Roles are cluster-wide: other databases (and other
-- migrations running at the same moment) may have created them already.
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['spicegate_app', 'spicegate_admin'] LOOP
		-- Created by hand where the migrating login may not create roles (docs/deploy.md).
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
			BEGIN
				EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT', r);
			EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
			END;
		END IF;
		-- The login that migrates may become both (a superuser already may).
		IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
			BEGIN
				EXECUTE format('GRANT %I TO %I', r, current_user);
			EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
			END;
		END IF;
	END LOOP;
END;
$$;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO "spicegate_app", "spicegate_admin";
--> statement-breakpoint
-- A gateway login that may not migrate checks, as the admin role, that nothing is pending.
GRANT USAGE ON SCHEMA "drizzle" TO "spicegate_admin";
--> statement-breakpoint
GRANT SELECT ON "drizzle"."__drizzle_migrations" TO "spicegate_admin";
--> statement-breakpoint
-- The admin role works on every table. The tenant role reads its tenant's rows and writes only what
-- a tenant's own requests write: its keys, spend rows, pool decisions, invoices, ledger lines and
-- audit rows; admin changes (tenants, grants, prices, flags) and the platform's writes (minting,
-- engine marks, conservation) are the admin role's. Neither may UPDATE or DELETE the audit trail
-- or the ledger (their triggers refuse the rest for every role too).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "spicegate_admin";
--> statement-breakpoint
REVOKE UPDATE, DELETE, TRUNCATE ON "journal_entries", "postings", "audit_events" FROM "spicegate_admin";
--> statement-breakpoint
GRANT SELECT ON "tenants", "credit_grants", "conservation_checks", "pool_prices", "feature_flags"
	TO "spicegate_app";
--> statement-breakpoint
GRANT SELECT, INSERT ON "journal_entries", "postings", "audit_events", "pool_decisions" TO "spicegate_app";
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE ON "api_keys", "spend" TO "spicegate_app";
--> statement-breakpoint
GRANT SELECT, INSERT ON "crypto_payments" TO "spicegate_app";
--> statement-breakpoint
-- An invoice's provider references, once the provider has answered; nothing that mints.
GRANT UPDATE ("provider_invoice_id", "invoice_url") ON "crypto_payments" TO "spicegate_app";
--> statement-breakpoint
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "spicegate_app", "spicegate_admin";
--> statement-breakpoint
-- Tables later migrations create: the admin role only, until a migration grants the tenant role.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "spicegate_admin";
--> statement-breakpoint
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO "spicegate_app", "spicegate_admin";
--> statement-breakpoint
-- ALTER TABLE refuses a table with deferred checks pending: an upgrade that ran the backfill (0007)
-- in this transaction has the ledger's balance checks waiting. Run them now; deferred again after.
SET CONSTRAINTS ALL IMMEDIATE;
--> statement-breakpoint
-- Every table with a tenant column (and tenants itself, by id): RLS forced on the owner too; the
-- tenant role sees the rows of app.current_tenant (none when unset); the admin role sees all.
DO $$
DECLARE
	tenant_tables text[][] := ARRAY[
		['tenants', 'id'], ['api_keys', 'tenant_id'], ['spend', 'tenant_id'], ['credit_grants', 'tenant_id'],
		['pool_decisions', 'tenant_id'], ['journal_entries', 'tenant_id'], ['conservation_checks', 'tenant_id'],
		['crypto_payments', 'tenant_id'], ['pool_prices', 'tenant_id'], ['feature_flags', 'tenant_id'],
		['audit_events', 'tenant_id']];
	t text[];
BEGIN
	FOREACH t SLICE 1 IN ARRAY tenant_tables LOOP
		EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t[1]);
		EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t[1]);
		EXECUTE format(
			'CREATE POLICY "tenant_isolation" ON %I TO "spicegate_app" '
			'USING (%I = current_setting(''app.current_tenant'', true)) '
			'WITH CHECK (%I = current_setting(''app.current_tenant'', true))', t[1], t[2], t[2]);
		EXECUTE format(
			'CREATE POLICY "admin_access" ON %I TO "spicegate_admin" USING (true) WITH CHECK (true)', t[1]);
	END LOOP;
END;
$$;
--> statement-breakpoint
SET CONSTRAINTS ALL DEFERRED;
--> statement-breakpoint
-- A presented key is looked up by its prefix before its tenant is known (asKeyLookup): that one
-- key, and its tenant, are readable while app.key_prefix names it.
CREATE POLICY "key_lookup" ON "api_keys" FOR SELECT TO "spicegate_app"
	USING ("prefix" = current_setting('app.key_prefix', true));
--> statement-breakpoint
CREATE POLICY "key_owner" ON "tenants" FOR SELECT TO "spicegate_app"
	USING ("id" IN (SELECT "tenant_id" FROM "api_keys" WHERE "prefix" = current_setting('app.key_prefix', true)));
--> statement-breakpoint
-- Ledger lines carry their tenant in the account name (`tenant:<id>:<account>`): the tenant role
-- reads its own accounts' lines only, and appends lines to its own accounts or the platform's
-- (a grant's or a payment's other side).
ALTER TABLE "postings" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
ALTER TABLE "postings" FORCE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY "tenant_isolation" ON "postings" FOR SELECT TO "spicegate_app"
	USING (split_part("account", ':', 1) = 'tenant'
		AND split_part("account", ':', 2) = current_setting('app.current_tenant', true));
--> statement-breakpoint
CREATE POLICY "tenant_append" ON "postings" FOR INSERT TO "spicegate_app"
	WITH CHECK ((split_part("account", ':', 1) = 'tenant'
		AND split_part("account", ':', 2) = current_setting('app.current_tenant', true))
		OR split_part("account", ':', 1) = 'platform');
--> statement-breakpoint
CREATE POLICY "admin_access" ON "postings" TO "spicegate_admin" USING (true) WITH CHECK (true);
--> statement-breakpoint
-- The ledger's balance check reads every line of an entry whoever inserts them: it runs as the
-- admin role (SECURITY DEFINER), not as a tenant whose policies would hide lines — at commit of a
-- batch spanning tenants, `app.current_tenant` names only the last. Changing a function's owner
-- needs the new owner to be able to create in its schema: granted for that statement only.
GRANT CREATE ON SCHEMA public TO "spicegate_admin";
--> statement-breakpoint
ALTER FUNCTION "ledger_check_balanced"() OWNER TO "spicegate_admin";
--> statement-breakpoint
REVOKE CREATE ON SCHEMA public FROM "spicegate_admin";
--> statement-breakpoint
ALTER FUNCTION "ledger_check_balanced"() SECURITY DEFINER SET search_path = public, pg_temp;
--> statement-breakpoint
-- The spend writer's batch (asSpendBatch): one statement for the rows of several tenants, each row
-- checked against the tenants the batch declares in app.spend_batch (ids joined by ',').
CREATE POLICY "spend_batch" ON "spend" TO "spicegate_app"
	USING ("tenant_id" = ANY (string_to_array(current_setting('app.spend_batch', true), ',')))
	WITH CHECK ("tenant_id" = ANY (string_to_array(current_setting('app.spend_batch', true), ',')));
--> statement-breakpoint
CREATE POLICY "spend_batch" ON "journal_entries" TO "spicegate_app"
	USING ("tenant_id" = ANY (string_to_array(current_setting('app.spend_batch', true), ',')))
	WITH CHECK ("tenant_id" = ANY (string_to_array(current_setting('app.spend_batch', true), ',')));
--> statement-breakpoint
CREATE POLICY "spend_batch" ON "postings" FOR INSERT TO "spicegate_app"
	WITH CHECK (split_part("account", ':', 1) = 'tenant'
		AND split_part("account", ':', 2) = ANY (string_to_array(current_setting('app.spend_batch', true), ',')));
