-- A standby sees itself: in recovery, what it received and replayed, and how far its replay is behind.
-- The replay delay is 0 when everything received is replayed (an idle primary is not lag), else the age of
-- the last replayed transaction.
SELECT pg_is_in_recovery()                                                     AS in_recovery,
       pg_last_wal_receive_lsn()::text                                         AS receive_lsn,
       pg_last_wal_replay_lsn()::text                                          AS replay_lsn,
       pg_last_xact_replay_timestamp()                                         AS last_replay_at,
       CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END        AS replay_paused,
       CASE WHEN NOT pg_is_in_recovery() THEN NULL
            WHEN pg_last_wal_receive_lsn() IS NOT NULL
                 AND pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 END AS replay_delay_seconds,
       pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint      AS replay_backlog_bytes,
       (SELECT timeline_id FROM pg_control_checkpoint())                       AS timeline,
       (SELECT system_identifier::text FROM pg_control_system())               AS system_identifier,
       now()                                                                   AS checked_at
