-- pg_table_restore: the preview's counts of the table {tbl} (alias t) against the backup's rows in {staging}
-- (alias s). {pk_match}: t's primary key equals s's; {differs}: some common column's text differs.
SELECT (SELECT count(*) FROM {tbl} t) AS current_rows,
       (SELECT count(*) FROM {staging} s) AS backup_rows,
       (SELECT count(*) FROM {staging} s WHERE NOT EXISTS (SELECT 1 FROM {tbl} t WHERE {pk_match})) AS to_insert,
       (SELECT count(*) FROM {staging} s JOIN {tbl} t ON {pk_match} WHERE {differs}) AS to_replace,
       (SELECT count(*) FROM {staging} s JOIN {tbl} t ON {pk_match} WHERE NOT ({differs})) AS unchanged,
       (SELECT count(*) FROM {tbl} t WHERE NOT EXISTS (SELECT 1 FROM {staging} s WHERE {pk_match})) AS to_delete
