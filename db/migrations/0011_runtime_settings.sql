CREATE TABLE "feature_flags" (
	"flag" text NOT NULL,
	"tenant_id" text,
	"enabled" boolean NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "feature_flags_flag_tenant_unique" UNIQUE NULLS NOT DISTINCT("flag","tenant_id"),
	CONSTRAINT "feature_flags_flag_known" CHECK ("feature_flags"."flag" in ('payments', 'inference', 'keys'))
);
--> statement-breakpoint
CREATE TABLE "pool_prices" (
	"pool" text NOT NULL,
	"tenant_id" text,
	"micro_per_1k_tokens" bigint NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "pool_prices_pool_tenant_unique" UNIQUE NULLS NOT DISTINCT("pool","tenant_id"),
	CONSTRAINT "pool_prices_price_positive" CHECK ("pool_prices"."micro_per_1k_tokens" > 0)
);
--> statement-breakpoint
ALTER TABLE "feature_flags" ADD CONSTRAINT "feature_flags_tenant_id_tenants_id_fk" FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "pool_prices" ADD CONSTRAINT "pool_prices_tenant_id_tenants_id_fk" FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants"("id") ON DELETE cascade ON UPDATE no action;