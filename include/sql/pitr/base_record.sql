-- One base_backups row per (dag_id, run_id, target); parameters are bound by psycopg, never interpolated.
INSERT INTO base_backups (target, backup_id, status, error_message, failed_step, start_time, stop_time,
                          duration_seconds, pg_basebackup_seconds, timeline, start_lsn, stop_lsn, start_wal,
                          stop_wal, server_version, system_identifier, database_size_bytes, backup_size_bytes,
                          archive_size_bytes, checksum_sha256, manifest_checksum, s3_bucket, s3_key, encrypted,
                          dag_id, run_id)
VALUES (%(target)s, %(backup_id)s, %(status)s, %(error_message)s, %(failed_step)s, %(start_time)s::timestamptz,
        %(stop_time)s::timestamptz, %(duration_seconds)s, %(pg_basebackup_seconds)s, %(timeline)s,
        %(start_lsn)s::pg_lsn, %(stop_lsn)s::pg_lsn, %(start_wal)s, %(stop_wal)s, %(server_version)s,
        %(system_identifier)s, %(database_size_bytes)s, %(backup_size_bytes)s, %(archive_size_bytes)s,
        %(checksum_sha256)s, %(manifest_checksum)s, %(s3_bucket)s, %(s3_key)s, %(encrypted)s, %(dag_id)s,
        %(run_id)s)
ON CONFLICT (dag_id, run_id, target) DO UPDATE SET
    backup_id = EXCLUDED.backup_id, status = EXCLUDED.status, error_message = EXCLUDED.error_message,
    failed_step = EXCLUDED.failed_step, start_time = EXCLUDED.start_time, stop_time = EXCLUDED.stop_time,
    duration_seconds = EXCLUDED.duration_seconds, pg_basebackup_seconds = EXCLUDED.pg_basebackup_seconds,
    timeline = EXCLUDED.timeline, start_lsn = EXCLUDED.start_lsn, stop_lsn = EXCLUDED.stop_lsn,
    start_wal = EXCLUDED.start_wal, stop_wal = EXCLUDED.stop_wal, server_version = EXCLUDED.server_version,
    system_identifier = EXCLUDED.system_identifier, database_size_bytes = EXCLUDED.database_size_bytes,
    backup_size_bytes = EXCLUDED.backup_size_bytes, archive_size_bytes = EXCLUDED.archive_size_bytes,
    checksum_sha256 = EXCLUDED.checksum_sha256, manifest_checksum = EXCLUDED.manifest_checksum,
    s3_bucket = EXCLUDED.s3_bucket, s3_key = EXCLUDED.s3_key,
    encrypted = COALESCE(EXCLUDED.encrypted, base_backups.encrypted), recorded_at = now()
RETURNING id;
