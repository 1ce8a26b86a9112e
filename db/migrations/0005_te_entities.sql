CREATE TABLE "te_entities" (
	"topic_id" text PRIMARY KEY NOT NULL,
	"type" text NOT NULL,
	"parent" text,
	"external_id" text,
	"health_endpoint" text,
	"twin" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"health" text,
	"last_measurement_at" timestamp with time zone,
	"alarms" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"commands" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"registered_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "te_entities_parent" ON "te_entities" USING btree ("parent");