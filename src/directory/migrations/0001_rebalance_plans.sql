CREATE TABLE "rebalance_plan_moves" (
	"plan_id" uuid NOT NULL,
	"position" integer NOT NULL,
	"tenant_id" uuid NOT NULL,
	"from_shard" text NOT NULL,
	"to_shard" text NOT NULL,
	"bytes" bigint NOT NULL,
	"state" text DEFAULT 'pending' NOT NULL,
	"move_id" uuid,
	"error" text,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "rebalance_plan_moves_plan_id_position_pk" PRIMARY KEY("plan_id","position"),
	CONSTRAINT "rebalance_plan_moves_state_known" CHECK ("rebalance_plan_moves"."state" in ('pending', 'moving', 'done', 'failed')),
	CONSTRAINT "rebalance_plan_moves_bytes" CHECK ("rebalance_plan_moves"."bytes" >= 0)
);
--> statement-breakpoint
CREATE TABLE "rebalance_plans" (
	"id" uuid PRIMARY KEY NOT NULL,
	"strategy" text NOT NULL,
	"state" text DEFAULT 'planned' NOT NULL,
	"drain_shard" text,
	"balanced" boolean NOT NULL,
	"reason" text,
	"before" jsonb NOT NULL,
	"after" jsonb NOT NULL,
	"error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	CONSTRAINT "rebalance_plans_strategy_known" CHECK ("rebalance_plans"."strategy" in ('count', 'size', 'drain')),
	CONSTRAINT "rebalance_plans_state_known" CHECK ("rebalance_plans"."state" in ('planned', 'applying', 'cancelled', 'done', 'failed'))
);
--> statement-breakpoint
ALTER TABLE "rebalance_plan_moves" ADD CONSTRAINT "rebalance_plan_moves_plan_id_rebalance_plans_id_fk" FOREIGN KEY ("plan_id") REFERENCES "public"."rebalance_plans"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rebalance_plan_moves" ADD CONSTRAINT "rebalance_plan_moves_tenant_id_tenants_id_fk" FOREIGN KEY ("tenant_id") REFERENCES "public"."tenants"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rebalance_plan_moves" ADD CONSTRAINT "rebalance_plan_moves_from_shard_shards_id_fk" FOREIGN KEY ("from_shard") REFERENCES "public"."shards"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rebalance_plan_moves" ADD CONSTRAINT "rebalance_plan_moves_to_shard_shards_id_fk" FOREIGN KEY ("to_shard") REFERENCES "public"."shards"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rebalance_plan_moves" ADD CONSTRAINT "rebalance_plan_moves_move_id_moves_id_fk" FOREIGN KEY ("move_id") REFERENCES "public"."moves"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "rebalance_plans" ADD CONSTRAINT "rebalance_plans_drain_shard_shards_id_fk" FOREIGN KEY ("drain_shard") REFERENCES "public"."shards"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "rebalance_plan_moves_tenant" ON "rebalance_plan_moves" USING btree ("plan_id","tenant_id");--> statement-breakpoint
CREATE INDEX "rebalance_plan_moves_tenant_idx" ON "rebalance_plan_moves" USING btree ("tenant_id");--> statement-breakpoint
CREATE INDEX "rebalance_plans_created_idx" ON "rebalance_plans" USING btree ("created_at");