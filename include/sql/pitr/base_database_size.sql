-- What the cluster's databases take on disk (those this role may connect to: pg_database_size needs CONNECT).
SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint AS database_size
FROM pg_database
WHERE datallowconn AND has_database_privilege(oid, 'CONNECT');
