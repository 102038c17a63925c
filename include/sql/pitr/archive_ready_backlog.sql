-- pg_wal_archive_check: completed segments (and history files) the archiver has not shipped yet, from
-- pg_wal/archive_status. pg_ls_archive_statusdir() needs superuser or the pg_monitor role.
SELECT count(*) AS ready,
       min(left(name, -length('.ready'))) AS oldest_ready,
       min(modification) AS oldest_ready_since
FROM pg_ls_archive_statusdir()
WHERE name LIKE '%.ready';
