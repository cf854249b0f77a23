CREATE TABLE "scram_settings" (
	"id" integer PRIMARY KEY DEFAULT 1 NOT NULL,
	"salt" text NOT NULL,
	"iterations" integer NOT NULL,
	CONSTRAINT "scram_settings_single_row" CHECK ("scram_settings"."id" = 1)
);
--> statement-breakpoint
ALTER TABLE "api_keys" ADD COLUMN "scram_stored_key" text;--> statement-breakpoint
ALTER TABLE "api_keys" ADD COLUMN "scram_server_key" text;--> statement-breakpoint
-- The salt: 16 bytes of gen_random_uuid() (version 4: 122 random bits, nothing to guess anyway; see the
-- schema's comment), made once here so every router of this directory offers the same. 4096 iterations,
-- PostgreSQL's own default for SCRAM.
INSERT INTO "scram_settings" ("id", "salt", "iterations")
VALUES (1, encode(decode(replace(gen_random_uuid()::text, '-', ''), 'hex'), 'base64'), 4096);
