-- The standby's physical slot, reserving WAL from now on (the base backup that follows starts after it).
SELECT slot_name::text, lsn::text FROM pg_create_physical_replication_slot(%(slot)s, true)
