SELECT slot_type, active, restart_lsn::text AS restart_lsn FROM pg_replication_slots WHERE slot_name = %(slot)s
