DROP INDEX "incoming_requests_live_instance";--> statement-breakpoint
ALTER TABLE "incoming_requests" ADD COLUMN "source_network" text;--> statement-breakpoint
CREATE UNIQUE INDEX "incoming_requests_live_secret" ON "incoming_requests" USING btree ("instance_id","secret_hash") WHERE "incoming_requests"."state" in ('Pending', 'Accepted');--> statement-breakpoint
CREATE UNIQUE INDEX "incoming_requests_accepted_instance" ON "incoming_requests" USING btree ("instance_id") WHERE "incoming_requests"."state" = 'Accepted';