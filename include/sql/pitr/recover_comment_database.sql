-- Marks the database as this run's ({comment} a literal): a retried copy may drop only its own.
COMMENT ON DATABASE {name} IS {comment};
