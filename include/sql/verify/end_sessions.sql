-- Ends every other session in this (scratch) database: what a stopped restore client left running.
SELECT count(pg_terminate_backend(pid))
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid();
