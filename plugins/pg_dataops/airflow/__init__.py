"""Airflow glue shared by the capabilities: the base operator and connections (base), the DAG defaults
(dag_defaults), failure alerts (notifiers), the run-outcome task (runstate)."""
