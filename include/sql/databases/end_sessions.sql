-- Ends every session in a database (not ours), waiting up to 5 s for each to go: the rename needs none.
SELECT count(pg_terminate_backend(pid, 5000))
FROM pg_stat_activity
WHERE datname = %(name)s
  AND pid <> pg_backend_pid();
