-- pg_user_data_restore: a table whose every column is in its primary key: only missing rows can be restored.
INSERT INTO {schema}.{table} AS t ({columns}) OVERRIDING SYSTEM VALUE
SELECT {columns} FROM {staging}.{table}
ON CONFLICT ({pk}) DO NOTHING
RETURNING true AS inserted;
