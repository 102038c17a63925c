-- pg_table_restore: a table's columns in order (name, type, generated, identity kind, part of the primary key),
-- and its relkind. No rows: the table does not exist. Bound: %(schema)s, %(name)s.
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attgenerated <> '' AS generated,
       a.attidentity AS identity,
       coalesce(a.attnum = ANY (i.indkey::int2[]), false) AS in_pk,
       c.relkind::text AS relkind
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
WHERE n.nspname = %(schema)s
  AND c.relname = %(name)s
  AND a.attnum > 0
  AND NOT a.attisdropped
ORDER BY a.attnum
