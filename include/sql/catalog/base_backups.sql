-- Base backups (pg_base_backup): one row per run and target, SUCCESS or FAILED (with the failing step and
-- why). Idempotent: safe to run before every insert. The S3 folder's manifest.json stays the source of truth
-- for recovery; this is the history a person reads (and the monitor may).
CREATE TABLE IF NOT EXISTS base_backups (
    id                  bigserial PRIMARY KEY,
    target              text        NOT NULL,
    backup_id           text,                       -- glimpse_base_20261201T033000Z (the S3 folder name)
    status              text        NOT NULL CHECK (status IN ('SUCCESS', 'FAILED')),
    error_message       text,
    failed_step         text,                       -- base_backup (preflight|stream|upload|manifest)
    start_time          timestamptz,                -- the server's clock
    stop_time           timestamptz,                -- the earliest moment this backup recovers to
    duration_seconds    numeric(12, 3),
    pg_basebackup_seconds numeric(12, 3),
    timeline            integer,
    start_lsn           pg_lsn,
    stop_lsn            pg_lsn,
    start_wal           text,
    stop_wal            text,
    server_version      text,
    system_identifier   text,
    database_size_bytes bigint,                     -- sum of pg_database_size at the start
    backup_size_bytes   bigint,                     -- the files the backup_manifest lists
    archive_size_bytes  bigint,                     -- the stored object (compressed, encrypted)
    checksum_sha256     text,                       -- of the stored object
    manifest_checksum   text,                       -- the backup_manifest's own Manifest-Checksum
    s3_bucket           text,
    s3_key              text,
    encrypted           boolean,                    -- client-side (age); NULL when no backup was made
    dag_id              text,
    run_id              text,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);
-- A re-run of the record task updates its row instead of duplicating it.
CREATE UNIQUE INDEX IF NOT EXISTS base_backups_run_target ON base_backups (dag_id, run_id, target);
CREATE INDEX IF NOT EXISTS base_backups_stop_time ON base_backups (target, stop_time DESC);
