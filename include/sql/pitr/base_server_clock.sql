-- The server's clock and archiver state, read just after pg_basebackup exits.
SELECT now() AS server_now, last_archived_wal, last_archived_time, failed_count, last_failed_wal
FROM pg_stat_archiver;
