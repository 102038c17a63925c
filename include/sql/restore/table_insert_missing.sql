-- pg_table_restore replace and merge_missing: insert the backup's rows whose primary key is missing from {tbl}.
-- {overriding}: OVERRIDING SYSTEM VALUE for identity columns (the backup's ids are kept).
INSERT INTO {tbl} AS t ({columns}) {overriding}
SELECT {values}
FROM {staging} s
WHERE NOT EXISTS (SELECT 1 FROM {tbl} t WHERE {pk_match})
