-- Tablespaces besides pg_default and pg_global: pg_basebackup's tar on stdout holds one tablespace only.
SELECT spcname, pg_tablespace_location(oid) AS location
FROM pg_tablespace
WHERE spcname NOT IN ('pg_default', 'pg_global')
ORDER BY spcname;
