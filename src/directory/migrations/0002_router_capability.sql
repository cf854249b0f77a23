CREATE TABLE "router_capability" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"secret" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "router_capability_single_row" CHECK ("router_capability"."id" = 1)
);
