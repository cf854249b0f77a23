-- Issue 18: pg_stat_statements grants SELECT on its views and EXECUTE on its reading functions to PUBLIC.
-- 0004 closed the schema (no USAGE for PUBLIC); this takes the grants themselves too, so only superusers and
-- the monitoring roles (pg_read_all_stats, pg_monitor) can read the statements of every session: the router's
-- role runs every tenant's SQL, so its own entries are every tenant's statements.
REVOKE ALL ON ALL TABLES IN SCHEMA switchyard_stats FROM PUBLIC;
--> statement-breakpoint
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA switchyard_stats FROM PUBLIC;
--> statement-breakpoint
GRANT SELECT ON ALL TABLES IN SCHEMA switchyard_stats TO pg_read_all_stats;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION switchyard_stats.pg_stat_statements(boolean), switchyard_stats.pg_stat_statements_info()
  TO pg_read_all_stats;
