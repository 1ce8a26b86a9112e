CREATE TABLE "incoming_requests" (
	"id" text PRIMARY KEY NOT NULL,
	"instance_id" text NOT NULL,
	"source_ip" text NOT NULL,
	"secret_hash" text NOT NULL,
	"snapshot" jsonb NOT NULL,
	"state" text NOT NULL,
	"seq" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "instance" (
	"instance_id" text PRIMARY KEY NOT NULL,
	"admin_token_hash" text NOT NULL,
	"singleton" boolean DEFAULT true NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "instance_singleton_unique" UNIQUE("singleton"),
	CONSTRAINT "instance_singleton" CHECK ("instance"."singleton")
);
--> statement-breakpoint
CREATE TABLE "transitions" (
	"global_seq" bigserial PRIMARY KEY NOT NULL,
	"machine" text NOT NULL,
	"machine_id" text NOT NULL,
	"seq" integer NOT NULL,
	"event" jsonb NOT NULL,
	"actor" jsonb NOT NULL,
	"from_state" text,
	"to_state" text NOT NULL,
	"snapshot" jsonb NOT NULL,
	"machine_version" integer NOT NULL,
	"at" timestamp with time zone NOT NULL,
	"prev_hash" text NOT NULL,
	"hash" text NOT NULL,
	CONSTRAINT "transitions_machine_seq" UNIQUE("machine","machine_id","seq")
);
--> statement-breakpoint
CREATE TABLE "upstreams" (
	"id" text PRIMARY KEY NOT NULL,
	"kind" text NOT NULL,
	"host" text NOT NULL,
	"broker_port" integer NOT NULL,
	"http_port" integer NOT NULL,
	"secret" text,
	"username" text,
	"tls" jsonb,
	"remote_request_id" text,
	"last_error" text,
	"snapshot" jsonb NOT NULL,
	"state" text NOT NULL,
	"seq" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "incoming_requests_live_instance" ON "incoming_requests" USING btree ("instance_id") WHERE "incoming_requests"."state" in ('Pending', 'Accepted');--> statement-breakpoint
CREATE INDEX "incoming_requests_state" ON "incoming_requests" USING btree ("state");