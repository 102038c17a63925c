-- SUCCESS backups in [since, now] for the size and duration trend, oldest first (the report keeps
-- the newest of a day when a tier ran twice).
SELECT target, backup_type, backup_date, file_size_bytes,
       duration_seconds::float8 AS duration_seconds  -- float: the report's data travels as JSON (XCom)
FROM backup_logs
WHERE status = 'SUCCESS' AND backup_date >= %(since)s AND backup_date <= %(now)s
ORDER BY target, backup_type, backup_date, id;
