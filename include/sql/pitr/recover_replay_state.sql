-- How far a recovering (or promoted) scratch server got: in recovery?, paused?, the last replayed commit.
-- pg_last_xact_replay_timestamp() stays at the last replayed transaction after promotion.
SELECT pg_is_in_recovery() AS in_recovery,
       CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() END AS pause_state,
       pg_last_xact_replay_timestamp() AS last_replay_time,
       pg_last_wal_replay_lsn() AS last_replay_lsn;
