-- After a carry-over: the id sequence of a catalog table ({table}) continues after its highest id.
SELECT setval(pg_get_serial_sequence(%(table)s, 'id'), greatest(coalesce(max(id), 0), 1), max(id) IS NOT NULL)
FROM {table};
