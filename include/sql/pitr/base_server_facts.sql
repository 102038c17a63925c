-- pg_base_backup's preflight: what the server is and whether it can be backed up for PITR.
-- One row; the role columns are of the connecting role. Read-only.
SELECT current_setting('server_version')                       AS server_version,
       current_setting('server_version_num')::int              AS server_version_num,
       current_setting('wal_level')                            AS wal_level,
       current_setting('archive_mode')                         AS archive_mode,
       current_setting('max_wal_senders')::int                 AS max_wal_senders,
       pg_size_bytes(current_setting('wal_segment_size'))      AS wal_segment_size,
       r.rolsuper                                              AS superuser,
       r.rolreplication                                        AS replication,
       current_user                                            AS role_name,
       has_function_privilege('pg_control_system()', 'EXECUTE') AS can_read_control,
       now()                                                   AS server_now
FROM pg_roles r
WHERE r.rolname = current_user;
