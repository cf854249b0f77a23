-- The seed's monitoring starts with pg_stat_statements ("no query over 100 ms"); the cluster preloads it.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
