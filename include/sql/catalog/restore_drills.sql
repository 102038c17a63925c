-- Measured restores (pg_restore_drill): the real RTO, next to the objective. Idempotent.
CREATE TABLE IF NOT EXISTS restore_drills (
    id                    bigserial PRIMARY KEY,
    drill_date            timestamptz NOT NULL DEFAULT now(),
    target                text        NOT NULL,
    backup_type           text,
    backup_file           text,
    s3_key                text,
    backup_timestamp      timestamptz,
    size_bytes            bigint,
    download_seconds      numeric(12, 3),
    restore_seconds       numeric(12, 3),
    check_seconds         numeric(12, 3),
    total_seconds         numeric(12, 3),          -- the measured RTO of a logical restore
    rto_objective_seconds numeric(12, 3) NOT NULL,
    status                text        NOT NULL CHECK (status IN ('SUCCESS', 'FAILED')),
    error_message         text,
    dag_id                text,
    run_id                text
);
CREATE INDEX IF NOT EXISTS restore_drills_date ON restore_drills (drill_date DESC);
