"""Backup retention: GFS plan, apply in S3 and locally, report, and its operator."""
