-- pg_table_restore: the sequences of the table's serial and identity columns (pg_get_serial_sequence).
SELECT a.attname AS "column",
       pg_get_serial_sequence(format('%%I.%%I', n.nspname, c.relname), a.attname) AS sequence
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
  AND c.relname = %(name)s
  AND a.attnum > 0
  AND NOT a.attisdropped
  AND pg_get_serial_sequence(format('%%I.%%I', n.nspname, c.relname), a.attname) IS NOT NULL
ORDER BY a.attnum
