"""pg_restore_drill: restore the latest backup into a scratch database and time it (RTO)."""
