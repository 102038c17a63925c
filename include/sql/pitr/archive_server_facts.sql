-- pg_wal_archive_check: what the server says about its WAL archiving (pg_stat_archiver is readable by
-- every role). The current WAL position and its segment need a primary: a standby in recovery has no
-- insert position (pg_walfile_name raises there), so both are NULL and its timeline comes from pg_control.
SELECT a.archived_count,
       a.last_archived_wal,
       a.last_archived_time,
       a.failed_count,
       a.last_failed_wal,
       a.last_failed_time,
       a.stats_reset,
       pg_is_in_recovery() AS in_recovery,
       CASE WHEN NOT pg_is_in_recovery() THEN pg_current_wal_lsn()::text END AS current_lsn,
       CASE WHEN NOT pg_is_in_recovery() THEN pg_walfile_name(pg_current_wal_lsn()) END AS current_walfile,
       (SELECT timeline_id FROM pg_control_checkpoint()) AS checkpoint_timeline,
       current_setting('archive_mode') AS archive_mode,
       current_setting('archive_timeout') AS archive_timeout,
       current_setting('wal_segment_size') AS wal_segment_size
FROM pg_stat_archiver AS a;
