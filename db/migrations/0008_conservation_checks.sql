CREATE TABLE "conservation_checks" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "conservation_checks_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"tenant_id" text NOT NULL,
	"checked_at" timestamp with time zone NOT NULL,
	"outcome" text NOT NULL,
	"drift_micro" bigint NOT NULL,
	"credited_drift_micro" bigint NOT NULL,
	"committed_drift_micro" bigint NOT NULL,
	"before_credited_micro" bigint NOT NULL,
	"before_committed_micro" bigint NOT NULL,
	"before_outbox_micro" bigint NOT NULL,
	"before_reserved_micro" bigint NOT NULL,
	"book_credited_micro" bigint NOT NULL,
	"book_spent_micro" bigint NOT NULL,
	"after_credited_micro" bigint,
	"after_committed_micro" bigint,
	"after_outbox_micro" bigint,
	"after_reserved_micro" bigint,
	CONSTRAINT "conservation_checks_outcome_check" CHECK ("conservation_checks"."outcome" in ('reported', 'repaired', 'changed'))
);
--> statement-breakpoint
CREATE INDEX "conservation_checks_tenant_idx" ON "conservation_checks" USING btree ("tenant_id","checked_at");