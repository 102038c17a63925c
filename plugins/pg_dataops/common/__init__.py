"""Shared kernel: config, errors, PostgreSQL and S3 access, backup names, SQL files, alert texts. Airflow-free."""
