CREATE SCHEMA "switchyard";
--> statement-breakpoint
CREATE TABLE "switchyard"."schema_version" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"version" text NOT NULL,
	"applied_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "schema_version_single_row" CHECK ("switchyard"."schema_version"."id" = 1)
);
--> statement-breakpoint
CREATE TABLE "switchyard"."tenant_ownership" (
	"tenant_id" uuid PRIMARY KEY NOT NULL,
	"epoch" integer NOT NULL,
	"state" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "tenant_ownership_state_known" CHECK ("switchyard"."tenant_ownership"."state" in ('owner', 'frozen', 'moved', 'incoming'))
);
