-- pg_user_data_restore: the staged rows into the table, every column (the runbook's upsert restored only
-- updated_at). Rows already identical are not rewritten; RETURNING tells inserted from updated rows.
INSERT INTO {schema}.{table} AS t ({columns}) OVERRIDING SYSTEM VALUE
SELECT {columns} FROM {staging}.{table}
ON CONFLICT ({pk}) DO UPDATE SET ({set_columns}) = ROW({excluded_columns})
    WHERE ROW({current_text}) IS DISTINCT FROM ROW({excluded_text})
RETURNING (t.xmax = 0) AS inserted;
