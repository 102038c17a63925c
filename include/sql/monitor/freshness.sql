-- Per expected target: its newest SUCCESS backup of any tier (weekly and monthly runs replace the
-- daily one on Sundays and the 1st, and every scheduled run is a full backup) and its newest attempt.
-- unnest() keeps targets that have no row at all, so "never backed up" is visible.
SELECT t.target,
       s.backup_date  AS success_date,
       s.backup_type  AS success_tier,
       s.file_name    AS success_file,
       s.encrypted    AS success_encrypted,  -- client-side (age); NULL: a row from before the column
       a.backup_date  AS attempt_date,
       a.backup_type  AS attempt_tier,
       a.status       AS attempt_status,
       a.failed_step  AS attempt_failed_step,
       a.error_message AS attempt_error
FROM unnest(%(targets)s::text[]) AS t(target)
LEFT JOIN LATERAL (
    SELECT backup_date, backup_type, file_name, encrypted
    FROM backup_logs b
    WHERE b.target = t.target AND b.status = 'SUCCESS' AND b.backup_date <= %(now)s
    ORDER BY b.backup_date DESC
    LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT backup_date, backup_type, status, failed_step, error_message
    FROM backup_logs b
    WHERE b.target = t.target AND b.backup_date <= %(now)s
    ORDER BY b.backup_date DESC, b.id DESC
    LIMIT 1
) a ON true
ORDER BY t.target;
