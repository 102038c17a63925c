-- Ordinary tables (and partitions) whose rows a dump carries, excluding system schemas.
-- Partitioned parents are skipped: their rows are counted in their partitions.
-- Extension-owned tables are left out (verify/tables_per_schema.sql does the same on the restored
-- side): CREATE EXTENSION recreates them, so their row count depends on the extension's version on
-- the restore server. pg_dump does carry a config table's (pg_extension_config_dump) user rows;
-- pg_restore --exit-on-error restores them, and the verification lists such tables by name.
SELECT n.nspname AS schema_name, c.relname AS table_name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2;
