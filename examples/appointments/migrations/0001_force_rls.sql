-- FORCE makes RLS apply to the tables' owner too (drizzle can only ENABLE it). Superusers still bypass
-- RLS, which is why the router connects as a role that is neither owner nor superuser (`switchyard migrate`).
ALTER TABLE "businesses" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "services" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "staff" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "customers" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "appointments" FORCE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "working_hours" FORCE ROW LEVEL SECURITY;
