-- Is there a database of this name on the server? (the new database must not exist; the swap's names)
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = %(name)s);
