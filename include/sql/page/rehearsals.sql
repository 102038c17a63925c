-- Full recovery rehearsals (pg_recovery_rehearsal) of the targets in [since, now], oldest first. Only the ones
-- that ran or failed: a DRY_RUN, REJECTED or REFUSED rehearsal measured nothing.
SELECT target,
       recorded_at                AS at,
       status,
       rto_seconds::float8        AS seconds,
       error_message,
       backup_key                 AS backup_file,
       dag_id,
       run_id
FROM restore_logs
WHERE kind = 'rehearsal' AND status IN ('SUCCESS', 'FAILED')
  AND target = ANY(%(targets)s::text[]) AND recorded_at >= %(since)s AND recorded_at <= %(now)s
ORDER BY target, recorded_at, id;
