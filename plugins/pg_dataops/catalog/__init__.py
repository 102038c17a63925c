"""The backup catalog: one module per table (backup_logs, restore_drills, monitor_alerts), the schema
(migrations), and its rebuild from the manifests in S3 (rebuild)."""
