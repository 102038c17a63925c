-- Which catalog tables exist. The Backups page only reads: it never runs ensure_schema (that is for writers),
-- so a catalog nothing has written to yet shows "nothing recorded" instead of an error.
SELECT to_regclass('backup_logs') IS NOT NULL     AS backup_logs,
       to_regclass('restore_drills') IS NOT NULL  AS restore_drills,
       to_regclass('pitr_recoveries') IS NOT NULL AS pitr_recoveries,
       to_regclass('restore_logs') IS NOT NULL    AS restore_logs,
       to_regclass('monitor_alerts') IS NOT NULL  AS monitor_alerts;
