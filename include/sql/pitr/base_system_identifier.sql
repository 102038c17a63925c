-- The cluster's system identifier (needs EXECUTE on pg_control_system(): superusers, or granted).
SELECT system_identifier::text FROM pg_control_system();
