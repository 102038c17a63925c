-- Per target: the newest restore drill of each status up to now (a failed newest drill is reported
-- with the last one that measured an RTO).
SELECT DISTINCT ON (target, status)
       target, status, drill_date, backup_type, backup_file,
       total_seconds::float8 AS total_seconds,  -- float: the report's data travels as JSON (XCom)
       error_message
FROM restore_drills
WHERE drill_date <= %(now)s
ORDER BY target, status, drill_date DESC, id DESC;
