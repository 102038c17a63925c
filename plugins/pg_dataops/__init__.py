"""pg_dataops: backup, verification and restore of PostgreSQL, orchestrated by Airflow 3.

Core modules (config, tiers, pgtools, dump, storage, manifest, catalog, backup) import no Airflow
and are tested without a scheduler; ``operators`` and ``notifiers`` are thin Airflow wrappers.
"""
