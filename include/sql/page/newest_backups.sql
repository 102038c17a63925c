-- Per target and tier: the newest SUCCESS backup up to now, and the newest attempt of any status (a FAILED one
-- newer than the success is shown beside it). unnest() keeps a tier that never ran, so "none yet" is visible.
SELECT t.target,
       k.tier,
       s.backup_date,
       s.file_name,
       s.file_size_bytes,
       s.duration_seconds::float8 AS duration_seconds,  -- float: the page's data is served as JSON too
       s.verified,
       s.verified_at,
       s.s3_uploaded,
       s.s3_key,
       s.dag_id,
       s.run_id,
       a.backup_date   AS attempt_date,
       a.status        AS attempt_status,
       a.failed_step   AS attempt_failed_step,
       a.error_message AS attempt_error,
       a.dag_id        AS attempt_dag_id,
       a.run_id        AS attempt_run_id
FROM unnest(%(targets)s::text[]) AS t(target)
CROSS JOIN unnest(%(tiers)s::text[]) WITH ORDINALITY AS k(tier, n)
LEFT JOIN LATERAL (
    SELECT backup_date, file_name, file_size_bytes, duration_seconds, verified, verified_at, s3_uploaded, s3_key,
           dag_id, run_id
    FROM backup_logs b
    WHERE b.target = t.target AND b.backup_type = k.tier AND b.status = 'SUCCESS' AND b.backup_date <= %(now)s
    ORDER BY b.backup_date DESC, b.id DESC
    LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT backup_date, status, failed_step, error_message, dag_id, run_id
    FROM backup_logs b
    WHERE b.target = t.target AND b.backup_type = k.tier AND b.backup_date <= %(now)s
    ORDER BY b.backup_date DESC, b.id DESC
    LIMIT 1
) a ON true
ORDER BY t.target, k.n;
