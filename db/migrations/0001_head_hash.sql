ALTER TABLE "incoming_requests" ADD COLUMN "head_hash" text;--> statement-breakpoint
ALTER TABLE "upstreams" ADD COLUMN "head_hash" text;