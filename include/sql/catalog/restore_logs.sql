-- Every run of a restore DAG (pg_full_recovery, pg_recovery_rehearsal, pg_table_restore, pg_user_data_restore),
-- refused, dry, rejected, failed or done: who asked and who approved, the params, what changed, where the way
-- back is kept, and the measured time (a full recovery's RTO: trigger to healthy). Idempotent.
CREATE TABLE IF NOT EXISTS restore_logs (
    id                     bigserial PRIMARY KEY,
    recorded_at            timestamptz NOT NULL DEFAULT now(),
    kind                   text        NOT NULL CHECK (kind IN ('full', 'rehearsal', 'table', 'user')),
    target                 text        NOT NULL,
    database_name          text,                     -- the database restored into (production or scratch)
    backup_key             text,                     -- the S3 key restored from (NULL: from_database)
    from_database          text,                     -- an already recovered database used as the source
    status                 text        NOT NULL CHECK (status IN ('SUCCESS', 'DRY_RUN', 'REJECTED', 'FAILED',
                                                                  'REFUSED')),
    triggered_by           text,
    approved_by            text,
    params                 jsonb,
    changes                jsonb,                    -- per table: inserted / updated / deleted / unchanged ...
    safety_location        text,                     -- S3 key, kept database or schema of the previous data
    rto_seconds            numeric(12, 3),           -- trigger to healthy (full), or to done (others)
    rto_objective_seconds  numeric(12, 3),
    error_message          text,
    details                jsonb,
    dag_id                 text,
    run_id                 text
);
CREATE INDEX IF NOT EXISTS restore_logs_recorded ON restore_logs (recorded_at DESC);
CREATE INDEX IF NOT EXISTS restore_logs_target_kind ON restore_logs (target, kind, recorded_at DESC);
