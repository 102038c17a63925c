"""Airflow glue shared by the capabilities: base operator, connections, notifiers, run state."""
