"""Airflow glue for the platform: thin templated operators and extra links. Logic lives in include/mlops."""
