-- One recovery (pg_pitr_restore) or PITR drill (pg_pitr_drill) into pitr_recoveries; returns its id.
INSERT INTO pitr_recoveries (
    kind, target, base_backup_id, target_time, reached_time, archive_ends_before_target, stop_message,
    restore_seconds, verify_seconds, replay_seconds, check_seconds, copy_seconds, total_seconds, rto_objective_seconds,
    recovered_database, swapped, old_database, approved_by, status, error_message, details, dag_id, run_id
) VALUES (
    %(kind)s, %(target)s, %(base_backup_id)s, %(target_time)s, %(reached_time)s, %(archive_ends_before_target)s,
    %(stop_message)s, %(restore_seconds)s, %(verify_seconds)s, %(replay_seconds)s, %(check_seconds)s, %(copy_seconds)s,
    %(total_seconds)s, %(rto_objective_seconds)s, %(recovered_database)s, %(swapped)s, %(old_database)s,
    %(approved_by)s, %(status)s, %(error_message)s, %(details)s, %(dag_id)s, %(run_id)s
)
RETURNING id;
