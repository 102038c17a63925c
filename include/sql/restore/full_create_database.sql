-- pg_full_recovery's new database: {name} an identifier, the locale values literals taken from the
-- production database, so text sorts as it did; template0, so nothing of template1 leaks in.
CREATE DATABASE {name} TEMPLATE template0 ENCODING {encoding} LC_COLLATE {collate} LC_CTYPE {ctype};
