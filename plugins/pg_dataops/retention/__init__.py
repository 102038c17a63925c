"""Backup retention: ``plan`` (GFS decisions, refusals, params), ``apply`` (S3 and local listing and deletion, one
run), ``report`` (texts), and its operator."""
