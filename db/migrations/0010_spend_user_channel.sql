ALTER TABLE "spend" ADD COLUMN "user_id" text;--> statement-breakpoint
ALTER TABLE "spend" ADD COLUMN "channel_id" text;