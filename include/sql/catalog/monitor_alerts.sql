-- Alert state of pg_backup_monitor: one row per finding key (monitor.dedup_key), so the hourly
-- monitor posts to Slack only when a warning changes state and resolves a PagerDuty incident once.
-- Idempotent; pg_backup_monitor runs it (under catalog/lock.sql) before every use.
CREATE TABLE IF NOT EXISTS monitor_alerts (
    dedup_key    text        PRIMARY KEY,     -- pg_backup_monitor/<check>/<target>
    failing      boolean     NOT NULL,        -- the state last alerted (Slack) or triggered (PagerDuty)
    message      text,                        -- the finding's message at that time
    changed_at   timestamptz NOT NULL,        -- when failing last changed
    last_seen_at timestamptz NOT NULL,        -- the last monitor run that evaluated this key
    severity     text        CHECK (severity IN ('page', 'warn'))  -- where a clear goes if the key disappears
);
