-- Exact row count of one table; {schema} and {table} are quoted identifiers.
SELECT count(*) FROM {schema}.{table};
