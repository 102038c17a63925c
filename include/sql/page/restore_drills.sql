-- Restore drills (pg_restore_drill) of the targets in [since, now], oldest first, failed ones included (no RTO).
SELECT target,
       drill_date                 AS at,
       status,
       total_seconds::float8      AS seconds,
       error_message,
       backup_file,
       dag_id,
       run_id
FROM restore_drills
WHERE target = ANY(%(targets)s::text[]) AND drill_date >= %(since)s AND drill_date <= %(now)s
ORDER BY target, drill_date, id;
