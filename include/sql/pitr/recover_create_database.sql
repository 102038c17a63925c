-- The database the recovered copy goes into: {name} an identifier, the locale values literals taken from
-- the recovered database, so text sorts as it did; template0, so nothing of template1 leaks in.
CREATE DATABASE {name} TEMPLATE template0 ENCODING {encoding} LC_COLLATE {collate} LC_CTYPE {ctype};
