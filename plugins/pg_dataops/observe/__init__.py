"""pg_backup_monitor and pg_backup_report: alert rules, the weekly report, and their operators."""
