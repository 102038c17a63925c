-- pg_table_restore: the foreign keys pointing at the table (%(schema)s.%(name)s): the referencing table, its
-- columns and the referenced ones (in the key's order), and the ON DELETE action (a, r, c, n, d).
SELECT c.conname AS name,
       rn.nspname AS schema,
       r.relname AS "table",
       c.confdeltype::text AS on_delete,
       array(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
       array(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
           AS referenced_columns,
       pg_get_constraintdef(c.oid) AS definition
FROM pg_constraint c
JOIN pg_class r ON r.oid = c.conrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_class t ON t.oid = c.confrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE c.contype = 'f'
  AND tn.nspname = %(schema)s
  AND t.relname = %(name)s
ORDER BY rn.nspname, r.relname, c.conname
