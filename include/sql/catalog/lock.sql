-- Serializes schema upkeep: mapped record tasks of a fleet may run it at the same moment, and
-- concurrent CREATE OR REPLACE VIEW fails with "tuple concurrently updated".
SELECT pg_advisory_xact_lock(hashtext('pg_dataops.catalog'));
