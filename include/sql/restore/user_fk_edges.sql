-- pg_user_data_restore: the foreign keys among the mapped tables (child references parent), to write parents
-- first. Tables are given as schema.table text.
SELECT DISTINCT cn.nspname || '.' || c.relname AS child, pn.nspname || '.' || p.relname AS parent
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = k.confrelid
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
WHERE k.contype = 'f'
  AND cn.nspname || '.' || c.relname = ANY(%(tables)s)
  AND pn.nspname || '.' || p.relname = ANY(%(tables)s)
ORDER BY 1, 2;
