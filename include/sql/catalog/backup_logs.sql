-- The backup catalog (runbook "백업 모니터링"). Idempotent: safe to run before every insert.
CREATE TABLE IF NOT EXISTS backup_logs (
    id               bigserial PRIMARY KEY,
    backup_date      timestamptz NOT NULL,           -- the snapshot time the backup holds
    backup_type      text        NOT NULL CHECK (backup_type IN ('daily', 'weekly', 'monthly')),
    target           text        NOT NULL,
    database_name    text,
    file_name        text,
    file_size_bytes  bigint,
    file_size_mb     numeric(14, 2) GENERATED ALWAYS AS (round(file_size_bytes / 1048576.0, 2)) STORED,
    checksum_sha256  text,
    duration_seconds numeric(12, 3),
    status           text        NOT NULL CHECK (status IN ('SUCCESS', 'FAILED')),
    error_message    text,
    failed_step      text,
    s3_bucket        text,
    s3_key           text,
    s3_uploaded      boolean     NOT NULL DEFAULT false,
    verified         boolean     NOT NULL DEFAULT false,
    verified_at      timestamptz,
    dag_id           text,
    run_id           text,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
-- One row per run and target: a re-run of the record task updates instead of duplicating.
CREATE UNIQUE INDEX IF NOT EXISTS backup_logs_run_target ON backup_logs (dag_id, run_id, target);
CREATE INDEX IF NOT EXISTS backup_logs_date ON backup_logs (backup_date DESC);
-- Issue 9: whether the stored dump is client-side encrypted (age); NULL when the run made no dump.
-- The monitor and the daily report read it: an unencrypted backup is a visible choice.
ALTER TABLE backup_logs ADD COLUMN IF NOT EXISTS encrypted boolean;
