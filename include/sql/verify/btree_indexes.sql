-- Every valid B-tree index of the restored database, for amcheck (one index per statement, so the
-- checks can run on several connections): its oid, names and the size of what a check reads.
SELECT c.oid AS index_oid,
       n.nspname AS schema_name,
       c.relname AS index_name,
       tn.nspname || '.' || t.relname AS table_name,
       pg_relation_size(t.oid) + pg_relation_size(c.oid) AS bytes
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_am am ON am.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE am.amname = 'btree'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND c.relpersistence <> 't'
  AND i.indisready AND i.indisvalid
ORDER BY bytes DESC, c.oid;
