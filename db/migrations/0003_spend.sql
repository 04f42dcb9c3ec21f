CREATE TABLE "spend" (
	"reservation_id" text PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"key_id" text NOT NULL,
	"pool" text NOT NULL,
	"prompt_tokens" integer NOT NULL,
	"completion_tokens" integer NOT NULL,
	"cost_micro" bigint NOT NULL,
	"settled" boolean NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"settled_at" timestamp with time zone
);
--> statement-breakpoint
CREATE INDEX "spend_tenant_idx" ON "spend" USING btree ("tenant_id","created_at");--> statement-breakpoint
CREATE INDEX "spend_unsettled_idx" ON "spend" USING btree ("settled");