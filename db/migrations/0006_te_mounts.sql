CREATE TABLE "te_mounts" (
	"instance_id" text PRIMARY KEY NOT NULL,
	"request_id" text NOT NULL,
	"mounts" jsonb NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
DROP INDEX "te_entities_parent";--> statement-breakpoint
ALTER TABLE "te_entities" ADD COLUMN "downstream" text DEFAULT '' NOT NULL;--> statement-breakpoint
ALTER TABLE "te_entities" ADD COLUMN "topic" text;--> statement-breakpoint
ALTER TABLE "te_entities" DROP CONSTRAINT "te_entities_pkey";--> statement-breakpoint
ALTER TABLE "te_entities" ADD CONSTRAINT "te_entities_downstream_topic_id_pk" PRIMARY KEY("downstream","topic_id");--> statement-breakpoint
CREATE INDEX "te_entities_parent" ON "te_entities" USING btree ("downstream","parent");
