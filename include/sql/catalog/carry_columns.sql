-- The stored (not generated) columns of a catalog table in the current schema, in their order; none: the table
-- does not exist there. Generated columns (backup_logs.file_size_mb) are computed again by the new database.
SELECT a.attname
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = %(table)s AND c.relkind = 'r'
  AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attnum;
