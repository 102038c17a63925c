-- Marks the database as this run's ({comment} a literal): only this run's cleanup or retry may drop it.
COMMENT ON DATABASE {name} IS {comment};
