-- One row per drill; values are bound parameters.
INSERT INTO restore_drills (target, backup_type, backup_file, s3_key, backup_timestamp, size_bytes,
                            download_seconds, restore_seconds, check_seconds, total_seconds,
                            rto_objective_seconds, status, error_message, dag_id, run_id)
VALUES (%(target)s, %(backup_type)s, %(backup_file)s, %(s3_key)s, %(backup_timestamp)s, %(size_bytes)s,
        %(download_seconds)s, %(restore_seconds)s, %(check_seconds)s, %(total_seconds)s,
        %(rto_objective_seconds)s, %(status)s, %(error_message)s, %(dag_id)s, %(run_id)s)
RETURNING id;
