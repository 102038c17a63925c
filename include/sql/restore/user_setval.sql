-- pg_user_data_restore: a serial or identity sequence set to the table's largest id when the restored rows went
-- past it (the next id the application gets must be free). Nothing when the sequence is already past it.
SELECT pg_catalog.setval(s.seqrelid, %(max)s)
FROM pg_catalog.pg_sequence s
WHERE s.seqrelid = %(sequence)s::regclass
  AND %(max)s >= coalesce(pg_catalog.pg_sequence_last_value(s.seqrelid) + 1, s.seqstart);
