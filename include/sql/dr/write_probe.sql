-- A write only a primary can do: assigning a transaction id fails on a server in recovery (or read-only).
SELECT pg_current_xact_id()::text AS xid, pg_current_wal_lsn()::text AS lsn, now() AS at
