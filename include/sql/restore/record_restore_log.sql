-- One restore run into restore_logs; returns its id.
INSERT INTO restore_logs (
    kind, target, database_name, backup_key, from_database, status, triggered_by, approved_by, params, changes,
    safety_location, rto_seconds, rto_objective_seconds, error_message, details, dag_id, run_id
) VALUES (
    %(kind)s, %(target)s, %(database_name)s, %(backup_key)s, %(from_database)s, %(status)s, %(triggered_by)s,
    %(approved_by)s, %(params)s, %(changes)s, %(safety_location)s, %(rto_seconds)s, %(rto_objective_seconds)s,
    %(error_message)s, %(details)s, %(dag_id)s, %(run_id)s
)
RETURNING id;
