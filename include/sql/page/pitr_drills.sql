-- PITR drills (pg_pitr_drill) of the targets in [since, now], oldest first; REFUSED and FAILED have no RTO.
SELECT target,
       recorded_at                AS at,
       status,
       total_seconds::float8      AS seconds,
       error_message,
       base_backup_id             AS backup_file,
       dag_id,
       run_id
FROM pitr_recoveries
WHERE kind = 'drill' AND target = ANY(%(targets)s::text[]) AND recorded_at >= %(since)s AND recorded_at <= %(now)s
ORDER BY target, recorded_at, id;
