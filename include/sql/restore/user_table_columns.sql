-- pg_user_data_restore: one mapped table's columns in order, with what the upsert needs to know of each:
-- its type, whether it is generated (never written), its place in the primary key, and the sequence behind it
-- (serial or identity: set past the restored ids). No rows: not a table in this database.
SELECT a.attname AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       a.attgenerated <> '' AS generated,
       pg_catalog.array_position(pk.conkey, a.attnum) AS pk_position,
       pg_catalog.pg_get_serial_sequence(pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
                                         a.attname) AS sequence
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_catalog.pg_constraint pk ON pk.conrelid = c.oid AND pk.contype = 'p'
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND c.relkind IN ('r', 'p')
ORDER BY a.attnum;
