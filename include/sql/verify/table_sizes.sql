-- Heap size of every ordinary table: the parallel checks start with the largest.
SELECT n.nspname AS schema_name, c.relname AS table_name, pg_relation_size(c.oid) AS bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%';
