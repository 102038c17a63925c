-- pg_table_restore replace: delete the rows of {tbl} whose primary key is not in the backup ({staging}).
DELETE FROM {tbl} t
WHERE NOT EXISTS (SELECT 1 FROM {staging} s WHERE {pk_match})
