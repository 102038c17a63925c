-- Every attempt (SUCCESS and FAILED) in (since, now], oldest first.
SELECT target,
       backup_type,
       backup_date,
       status,
       file_name,
       file_size_bytes,
       duration_seconds::float8 AS duration_seconds,  -- float: the report's data travels as JSON (XCom)
       s3_uploaded,
       verified,
       encrypted,  -- client-side (age); false or NULL (a row from before the column): S3 SSE only
       failed_step,
       error_message
FROM backup_logs
WHERE backup_date > %(since)s AND backup_date <= %(now)s
ORDER BY backup_date, target, id;
