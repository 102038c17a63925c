-- pg_user_data_restore's way back, inside the upsert's transaction: every current row the upsert may change
-- (the user's rows, and any row with a primary key the backup brings) copied into the safety schema, kept.
INSERT INTO {safety}.{copy}
SELECT * FROM {schema}.{table} c
WHERE ({user_filter}) OR EXISTS (SELECT FROM {staging}.{table} s WHERE {pk_match_c_s});
