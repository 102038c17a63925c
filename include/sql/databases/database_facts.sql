-- What a copy of a database keeps: its encoding and locale, its owner, whether it accepts connections,
-- and its comment (pg_pitr_restore marks the database it creates with the run that created it).
SELECT pg_encoding_to_char(d.encoding) AS encoding, d.datcollate AS collate, d.datctype AS ctype,
       pg_get_userbyid(d.datdba) AS owner, d.datallowconn AS allow_connections,
       shobj_description(d.oid, 'pg_database') AS comment
FROM pg_database d
WHERE d.datname = %(name)s;
