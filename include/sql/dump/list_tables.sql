-- Ordinary tables (and partitions) whose rows a dump carries, excluding system schemas.
-- Partitioned parents are skipped: their rows are counted in their partitions.
SELECT n.nspname AS schema_name, c.relname AS table_name
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.objid = c.oid AND d.deptype = 'e')  -- extension-owned tables are not dumped
ORDER BY 1, 2;
