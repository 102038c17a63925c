-- pg_table_restore replace: every column of the rows that differ from the backup's, not only updated_at (the
-- runbook's upsert restored updated_at alone). {columns}: t's columns set from {values} (s's).
UPDATE {tbl} t
SET ({columns}) = ROW({values})
FROM {staging} s
WHERE {pk_match}
  AND {differs}
