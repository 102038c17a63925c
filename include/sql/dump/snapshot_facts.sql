-- Facts recorded in the manifest, read inside the exported snapshot.
SELECT pg_export_snapshot() AS snapshot_id,
       transaction_timestamp() AS snapshot_time,
       version() AS db_version,
       current_setting('server_version_num')::int AS server_version_num,
       current_database() AS database_name;
