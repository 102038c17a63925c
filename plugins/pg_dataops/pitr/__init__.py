"""Point-in-time recovery: WAL archiving (Barman's cloud tools), base backups, archive checks, recovery, drill."""
