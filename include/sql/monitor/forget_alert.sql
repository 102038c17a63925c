-- A key no check produces any more (its target or local_root left the configuration), once cleared.
DELETE FROM monitor_alerts WHERE dedup_key = %(dedup_key)s;
