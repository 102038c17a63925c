-- pg_user_data_restore, after the upsert: how many staged rows now have an identical row in the table (all of
-- them, or the transaction is rolled back).
SELECT count(*) FROM {staging}.{table} s
WHERE EXISTS (SELECT FROM {schema}.{table} t WHERE {pk_match_s_t}
              AND NOT ROW({staged_text}) IS DISTINCT FROM ROW({current_text}));
