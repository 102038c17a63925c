-- The swap closes the database to new sessions while it renames ({allow} is true or false).
ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow};
