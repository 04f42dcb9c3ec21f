CREATE TABLE "crypto_payments" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant_id" text NOT NULL,
	"provider" text DEFAULT 'nowpayments' NOT NULL,
	"provider_invoice_id" text,
	"provider_payment_id" text,
	"invoice_url" text,
	"pack" text NOT NULL,
	"price_amount" text NOT NULL,
	"price_currency" text NOT NULL,
	"credits_micro" bigint NOT NULL,
	"status" text NOT NULL,
	"status_rank" smallint NOT NULL,
	"actually_paid" text,
	"pay_currency" text,
	"last_ipn_updated_at" bigint,
	"created_at" timestamp with time zone NOT NULL,
	"updated_at" timestamp with time zone NOT NULL,
	"minted_at" timestamp with time zone,
	"mint_entry_id" bigint,
	"engine_credited_at" timestamp with time zone,
	"refunded_micro" bigint,
	"refund_shortfall_micro" bigint,
	"refunded_at" timestamp with time zone,
	"engine_debited_at" timestamp with time zone,
	CONSTRAINT "crypto_payments_credits_positive" CHECK ("crypto_payments"."credits_micro" > 0),
	CONSTRAINT "crypto_payments_status_check" CHECK ("crypto_payments"."status" in ('waiting', 'confirming', 'partially_paid', 'confirmed', 'sending', 'finished', 'failed', 'expired', 'refunded'))
);
--> statement-breakpoint
CREATE TABLE "webhook_events" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_events_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"provider" text NOT NULL,
	"provider_payment_ref" text NOT NULL,
	"payment_id" text,
	"status" text NOT NULL,
	"ipn_updated_at" bigint NOT NULL,
	"outcome" text NOT NULL,
	"reason" text,
	"request_id" text,
	"received_at" timestamp with time zone NOT NULL,
	CONSTRAINT "webhook_events_outcome_check" CHECK ("webhook_events"."outcome" in ('processed', 'duplicate', 'ignored'))
);
--> statement-breakpoint
CREATE INDEX "crypto_payments_tenant_idx" ON "crypto_payments" USING btree ("tenant_id","created_at");--> statement-breakpoint
CREATE UNIQUE INDEX "crypto_payments_provider_invoice_key" ON "crypto_payments" USING btree ("provider","provider_invoice_id");--> statement-breakpoint
CREATE INDEX "crypto_payments_open_idx" ON "crypto_payments" USING btree ("created_at") WHERE "crypto_payments"."status" not in ('finished', 'failed', 'expired', 'refunded');--> statement-breakpoint
CREATE INDEX "crypto_payments_engine_owed_idx" ON "crypto_payments" USING btree ("minted_at") WHERE ("crypto_payments"."minted_at" is not null and "crypto_payments"."engine_credited_at" is null) or ("crypto_payments"."refunded_at" is not null and "crypto_payments"."engine_debited_at" is null);--> statement-breakpoint
CREATE UNIQUE INDEX "webhook_events_first_key" ON "webhook_events" USING btree ("provider","provider_payment_ref","status","ipn_updated_at") WHERE "webhook_events"."outcome" <> 'duplicate';--> statement-breakpoint
CREATE INDEX "webhook_events_payment_idx" ON "webhook_events" USING btree ("payment_id","received_at");