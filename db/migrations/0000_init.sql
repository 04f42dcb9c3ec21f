CREATE TABLE "tenants" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"tier" smallint NOT NULL,
	"monthly_cap_micro" bigint,
	"frozen" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "tenants_tier_range" CHECK ("tenants"."tier" between 1 and 9),
	CONSTRAINT "tenants_monthly_cap_nonnegative" CHECK ("tenants"."monthly_cap_micro" >= 0)
);
