-- pg_stat_replication on the primary: every connected standby, its positions, byte lags and time lags.
SELECT r.pid,
       r.application_name,
       r.client_addr::text                                                   AS client_addr,
       r.state,
       r.sync_state,
       r.sent_lsn::text                                                      AS sent_lsn,
       r.replay_lsn::text                                                    AS replay_lsn,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.sent_lsn)::bigint             AS sent_lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.write_lsn)::bigint            AS write_lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.flush_lsn)::bigint            AS flush_lag_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint           AS replay_lag_bytes,
       extract(epoch FROM r.write_lag)::float8                               AS write_lag_seconds,
       extract(epoch FROM r.flush_lag)::float8                               AS flush_lag_seconds,
       extract(epoch FROM r.replay_lag)::float8                              AS replay_lag_seconds,
       r.reply_time,
       s.slot_name
FROM pg_stat_replication r
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
ORDER BY r.application_name, r.pid
