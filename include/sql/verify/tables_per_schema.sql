-- Number of ordinary tables per schema (the runbook counted information_schema.tables in public),
-- with the same rules as dump/list_tables.sql, so both sides count the same tables: extension-owned
-- tables are left out (CREATE EXTENSION recreates them; the dump's counts skip them too).
SELECT n.nspname AS schema_name, count(*) AS tables
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
GROUP BY n.nspname
ORDER BY n.nspname;
