INSERT INTO failovers (target, standby, status, dry_run, forced, triggered_by, approved_by, params, old_primary,
                       new_primary, primary_state, loss, failover_seconds, total_seconds, timeline, results,
                       error_message, dag_id, run_id)
VALUES (%(target)s, %(standby)s, %(status)s, %(dry_run)s, %(forced)s, %(triggered_by)s, %(approved_by)s, %(params)s,
        %(old_primary)s, %(new_primary)s, %(primary_state)s, %(loss)s, %(failover_seconds)s, %(total_seconds)s,
        %(timeline)s, %(results)s, %(error_message)s, %(dag_id)s, %(run_id)s)
RETURNING id
