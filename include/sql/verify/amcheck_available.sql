-- amcheck ships with PostgreSQL's contrib; a server built without it simply skips the index check.
SELECT count(*) > 0 FROM pg_available_extensions WHERE name = 'amcheck';
