-- pg_user_data_restore: the type of the user key column (restore.user_key), as format_type writes it; no row: no
-- such column in the target database.
SELECT pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(table)s AND a.attname = %(column)s
  AND a.attnum > 0 AND NOT a.attisdropped;
