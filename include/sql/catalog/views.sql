-- The runbook's monitoring views, on the catalog. CREATE OR REPLACE keeps them idempotent; new
-- columns go at the end (PostgreSQL only lets a replaced view add columns after the old ones).
CREATE OR REPLACE VIEW v_backup_status AS
SELECT backup_date,
       backup_type,
       file_size_mb,
       duration_seconds,
       status,
       error_message,
       s3_uploaded,
       verified,
       target,
       file_name,
       s3_key,
       failed_step,
       encrypted  -- client-side (age); false: S3 server-side encryption only
FROM backup_logs
WHERE backup_date >= CURRENT_DATE - INTERVAL '7 days'
ORDER BY backup_date DESC;

CREATE OR REPLACE VIEW v_backup_statistics AS
SELECT backup_type,
       COUNT(*) AS total_backups,
       AVG(file_size_mb) AS avg_size_mb,
       AVG(duration_seconds) AS avg_duration_sec,
       SUM(CASE WHEN status = 'SUCCESS' THEN 1 ELSE 0 END) AS successful,
       SUM(CASE WHEN status = 'FAILED' THEN 1 ELSE 0 END) AS failed,
       SUM(CASE WHEN verified THEN 1 ELSE 0 END) AS verified
FROM backup_logs
WHERE backup_date >= CURRENT_DATE - INTERVAL '30 days'
GROUP BY backup_type;
