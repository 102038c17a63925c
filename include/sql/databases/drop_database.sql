-- Drops a database this run created (a failed or retried copy); FORCE ends sessions still in it.
DROP DATABASE IF EXISTS {name} WITH (FORCE);
