-- FORCE (PostgreSQL 13+) ends sessions a failed check may have left behind.
DROP DATABASE IF EXISTS {name} WITH (FORCE);
