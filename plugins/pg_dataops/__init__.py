"""pg_dataops: backup, verification and restore of PostgreSQL, orchestrated by Airflow 3.

One folder per capability (backup, retention, drill, observe, catalog) over a shared kernel (common).
Only ``pg_dataops.airflow`` and each capability's ``operators.py`` import Airflow (tests/unit/test_layout.py);
the rest is tested without a scheduler.
"""
