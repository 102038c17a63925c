-- Records the state just alerted (or just seen) for one key. changed_at moves only when failing flips.
INSERT INTO monitor_alerts (dedup_key, failing, message, changed_at, last_seen_at, severity)
VALUES (%(dedup_key)s, %(failing)s, %(message)s, %(now)s, %(now)s, %(severity)s)
ON CONFLICT (dedup_key) DO UPDATE SET
    failing      = EXCLUDED.failing,
    message      = EXCLUDED.message,
    severity     = EXCLUDED.severity,
    last_seen_at = EXCLUDED.last_seen_at,
    changed_at   = CASE WHEN monitor_alerts.failing IS DISTINCT FROM EXCLUDED.failing
                        THEN EXCLUDED.changed_at ELSE monitor_alerts.changed_at END;
