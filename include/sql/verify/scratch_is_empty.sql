-- True when nothing was restored into the scratch database yet (a retried restore test finds the
-- previous attempt's objects and starts from a new database instead).
SELECT NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                     AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%')
   AND NOT EXISTS (SELECT 1 FROM pg_namespace
                   WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public')
                     AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp\_%')
   AND NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname <> 'plpgsql');
