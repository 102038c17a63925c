-- Every known alert key and the state last sent for it.
SELECT dedup_key, failing, message, changed_at, last_seen_at, severity
FROM monitor_alerts
ORDER BY dedup_key;
