"""pg_backup_monitor and pg_backup_report: the rules (monitor), what to alert and when (alerts), the daily
report (report), and their operators."""
