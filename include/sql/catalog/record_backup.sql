-- One row per (dag_id, run_id, target); parameters are bound by psycopg, never interpolated.
-- encrypted: a writer that cannot tell (NULL) does not erase what one that could recorded.
INSERT INTO backup_logs (backup_date, backup_type, target, database_name, file_name, file_size_bytes,
                         checksum_sha256, duration_seconds, status, error_message, failed_step,
                         s3_bucket, s3_key, s3_uploaded, verified, verified_at, dag_id, run_id, encrypted)
VALUES (%(backup_date)s, %(backup_type)s, %(target)s, %(database_name)s, %(file_name)s, %(file_size_bytes)s,
        %(checksum_sha256)s, %(duration_seconds)s, %(status)s, %(error_message)s, %(failed_step)s,
        %(s3_bucket)s, %(s3_key)s, %(s3_uploaded)s, %(verified)s, %(verified_at)s, %(dag_id)s, %(run_id)s,
        %(encrypted)s)
ON CONFLICT (dag_id, run_id, target) DO UPDATE SET
    backup_date = EXCLUDED.backup_date, backup_type = EXCLUDED.backup_type,
    database_name = EXCLUDED.database_name, file_name = EXCLUDED.file_name,
    file_size_bytes = EXCLUDED.file_size_bytes, checksum_sha256 = EXCLUDED.checksum_sha256,
    duration_seconds = EXCLUDED.duration_seconds, status = EXCLUDED.status,
    error_message = EXCLUDED.error_message, failed_step = EXCLUDED.failed_step,
    s3_bucket = EXCLUDED.s3_bucket, s3_key = EXCLUDED.s3_key, s3_uploaded = EXCLUDED.s3_uploaded,
    verified = EXCLUDED.verified, verified_at = EXCLUDED.verified_at,
    encrypted = COALESCE(EXCLUDED.encrypted, backup_logs.encrypted), recorded_at = now()
RETURNING id;
