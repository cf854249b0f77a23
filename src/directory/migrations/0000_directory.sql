CREATE TABLE "api_keys" (
	"id" uuid PRIMARY KEY NOT NULL,
	"prefix" text NOT NULL,
	"secret_hash" text NOT NULL,
	"scope" text NOT NULL,
	"tenants" uuid[],
	"name" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "api_keys_prefix_unique" UNIQUE("prefix"),
	CONSTRAINT "api_keys_scope_known" CHECK ("api_keys"."scope" in ('app', 'admin'))
);
--> statement-breakpoint
CREATE TABLE "moves" (
	"id" uuid PRIMARY KEY NOT NULL,
	"tenant_id" uuid NOT NULL,
	"source_shard" text NOT NULL,
	"target_shard" text NOT NULL,
	"state" text NOT NULL,
	"fence_lsn" text,
	"cutover_lsn" text,
	"progress" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "shards" (
	"id" text PRIMARY KEY NOT NULL,
	"capacity" integer DEFAULT 100 NOT NULL,
	"state" text DEFAULT 'active' NOT NULL,
	"schema_version" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "shards_capacity_positive" CHECK ("shards"."capacity" > 0),
	CONSTRAINT "shards_state_known" CHECK ("shards"."state" in ('active', 'draining'))
);
--> statement-breakpoint
CREATE TABLE "tenants" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"shard_id" text NOT NULL,
	"epoch" integer DEFAULT 1 NOT NULL,
	"state" text DEFAULT 'active' NOT NULL,
	"limits" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "tenants_state_known" CHECK ("tenants"."state" in ('active', 'moving', 'frozen'))
);
--> statement-breakpoint
ALTER TABLE "moves" ADD CONSTRAINT "moves_tenant_id_tenants_id_fk" FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "moves" ADD CONSTRAINT "moves_source_shard_shards_id_fk" FOREIGN KEY ("source_shard") REFERENCES "public"."shards"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "moves" ADD CONSTRAINT "moves_target_shard_shards_id_fk" FOREIGN KEY ("target_shard") REFERENCES "public"."shards"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "tenants" ADD CONSTRAINT "tenants_shard_id_shards_id_fk" FOREIGN KEY ("shard_id") REFERENCES "public"."shards"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "moves_one_open_per_tenant" ON "moves" USING btree ("tenant_id") WHERE "moves"."state" not in ('done', 'aborted', 'failed');--> statement-breakpoint
CREATE INDEX "tenants_shard_idx" ON "tenants" USING btree ("shard_id");