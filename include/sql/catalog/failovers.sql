-- Every run of pg_failover, refused, dry, rejected, failed or done: who asked and who approved, the params,
-- both servers, the data lost, the failover time (trigger to writable new primary) and each step's duration.
CREATE TABLE IF NOT EXISTS failovers (
    id                 bigserial PRIMARY KEY,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    target             text        NOT NULL,
    standby            text,
    status             text        NOT NULL CHECK (status IN ('SUCCESS', 'DRY_RUN', 'REJECTED', 'FAILED', 'REFUSED')),
    dry_run            boolean     NOT NULL,
    forced             boolean     NOT NULL,
    triggered_by       text,
    approved_by        text,
    params             jsonb,
    old_primary        text,                     -- host:port
    new_primary        text,
    primary_state      text,                     -- healthy / down / in recovery, when validated
    loss               jsonb,                    -- bytes of WAL lost (or unknown and why)
    failover_seconds   numeric(12, 3),           -- trigger to the first write on the new primary
    total_seconds      numeric(12, 3),
    timeline           jsonb,                    -- [{step, state, seconds}]
    results            jsonb,
    error_message      text,
    dag_id             text,
    run_id             text
);
CREATE INDEX IF NOT EXISTS failovers_target_recorded ON failovers (target, recorded_at DESC);
