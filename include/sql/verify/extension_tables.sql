-- Tables owned by an extension (created by its install script), which neither side counts; a
-- config table (pg_extension_config_dump) has its user rows in the dump, restored with the rest.
SELECT n.nspname AS schema_name, c.relname AS table_name, e.extname AS extension,
       c.oid = ANY (coalesce(e.extconfig, '{}')) AS config_table
FROM pg_depend d
JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_extension e ON e.oid = d.refobjid AND d.refclassid = 'pg_extension'::regclass
WHERE d.deptype = 'e'
  AND c.relkind IN ('r', 'p')
ORDER BY 1, 2;
