-- Point-in-time recoveries: pg_pitr_restore (kind 'restore') and pg_pitr_drill (kind 'drill'), with the
-- measured time of each phase next to the RTO objective. Idempotent.
CREATE TABLE IF NOT EXISTS pitr_recoveries (
    id                         bigserial PRIMARY KEY,
    recorded_at                timestamptz NOT NULL DEFAULT now(),
    kind                       text        NOT NULL CHECK (kind IN ('restore', 'drill')),
    target                     text        NOT NULL,
    base_backup_id             text,
    target_time                timestamptz,              -- asked for (NULL: the end of the archive)
    reached_time               timestamptz,              -- the last commit replayed
    archive_ends_before_target boolean,                  -- recovered to the archive's end, which is before it
    stop_message               text,                     -- "recovery stopping before commit of transaction ..."
    restore_seconds            numeric(12, 3),           -- base backup from S3 into the scratch directory
    verify_seconds             numeric(12, 3),           -- pg_verifybackup of the restored copy (a drill)
    replay_seconds             numeric(12, 3),           -- WAL replay to the target
    check_seconds              numeric(12, 3),
    copy_seconds               numeric(12, 3),           -- pg_dump | pg_restore into the target server
    total_seconds              numeric(12, 3),           -- restore + verify + replay + checks + copy: the RTO
    rto_objective_seconds      numeric(12, 3),
    recovered_database         text,
    swapped                    boolean,
    old_database               text,                     -- where the replaced database was kept
    approved_by                text,
    status                     text        NOT NULL CHECK (status IN ('SUCCESS', 'FAILED', 'REFUSED')),
    error_message              text,
    details                    jsonb,
    dag_id                     text,
    run_id                     text
);
CREATE INDEX IF NOT EXISTS pitr_recoveries_recorded ON pitr_recoveries (recorded_at DESC);
CREATE INDEX IF NOT EXISTS pitr_recoveries_target_kind ON pitr_recoveries (target, kind, recorded_at DESC);
-- Added for pg_pitr_drill's pg_verifybackup phase; tables created before it get the column here.
ALTER TABLE pitr_recoveries ADD COLUMN IF NOT EXISTS verify_seconds numeric(12, 3);
