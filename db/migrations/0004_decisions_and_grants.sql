CREATE TABLE "credit_grants" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"amount_micro" bigint NOT NULL,
	"reason" text NOT NULL,
	"granted_by" text NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "pool_decisions" (
	"reservation_id" text PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"key_id" text NOT NULL,
	"requested" text NOT NULL,
	"actual" text NOT NULL,
	"reason" text NOT NULL,
	"cost_micro" bigint NOT NULL,
	"created_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
ALTER TABLE "spend" ADD COLUMN "free" boolean DEFAULT false NOT NULL;--> statement-breakpoint
CREATE INDEX "credit_grants_tenant_idx" ON "credit_grants" USING btree ("tenant_id","created_at");--> statement-breakpoint
CREATE INDEX "pool_decisions_tenant_idx" ON "pool_decisions" USING btree ("tenant_id","created_at");