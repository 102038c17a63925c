-- Structural check of every B-tree index of the restored database (heapallindexed: each heap
-- tuple must be found in the index). Returns how many indexes were checked; errors raise.
SELECT count(bt_index_check(index => c.oid, heapallindexed => true))
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_am am ON am.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE am.amname = 'btree'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND c.relpersistence <> 't'
  AND i.indisready AND i.indisvalid;
