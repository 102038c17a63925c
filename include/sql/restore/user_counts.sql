-- pg_user_data_restore's preview of one table: the user's rows staged from the backup against the current rows
-- with the same primary key. inserted: no current row; updated: some column differs (compared as text, so types
-- without an equality operator compare too); unchanged: identical. left_alone: current rows of the user that
-- are not in the backup (the restore does not delete them).
SELECT count(*) FILTER (WHERE t.{pk_first} IS NULL) AS inserted,
       count(*) FILTER (WHERE t.{pk_first} IS NOT NULL AND ROW({staged_text}) IS DISTINCT FROM ROW({current_text}))
           AS updated,
       count(*) FILTER (WHERE t.{pk_first} IS NOT NULL
                        AND NOT ROW({staged_text}) IS DISTINCT FROM ROW({current_text})) AS unchanged,
       (SELECT count(*) FROM {schema}.{table} c
        WHERE ({user_filter}) AND NOT EXISTS (SELECT FROM {staging}.{table} s2 WHERE {pk_match_c_s2})) AS left_alone
FROM {staging}.{table} s
LEFT JOIN {schema}.{table} t ON {pk_match_s_t};
