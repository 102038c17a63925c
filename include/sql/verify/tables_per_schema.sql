-- Number of ordinary tables per schema (the runbook counted information_schema.tables in public).
SELECT n.nspname AS schema_name, count(*) AS tables
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
GROUP BY n.nspname
ORDER BY n.nspname;
