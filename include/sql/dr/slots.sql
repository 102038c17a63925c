-- Replication slots on the primary and the WAL each holds back (an inactive slot holds it forever).
SELECT slot_name,
       slot_type,
       active,
       wal_status,
       restart_lsn::text                                                     AS restart_lsn,
       CASE WHEN restart_lsn IS NULL THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END AS retained_bytes
FROM pg_replication_slots
ORDER BY slot_name
