-- A server as a replication primary sees itself: its WAL position, timeline and the settings streaming needs.
SELECT pg_is_in_recovery()                                                     AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END AS current_lsn,
       (SELECT timeline_id FROM pg_control_checkpoint())                       AS timeline,
       current_setting('wal_level')                                            AS wal_level,
       current_setting('max_wal_senders')::int                                 AS max_wal_senders,
       current_setting('server_version_num')::int / 10000                      AS major,
       (SELECT system_identifier::text FROM pg_control_system())               AS system_identifier,
       now()                                                                   AS checked_at
