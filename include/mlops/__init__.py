"""The platform's library: plain, typed functions that the DAGs, the service and the tests call.

Deliberately empty of imports: every Airflow task pays for what it imports (see STACK_NOTES).
"""
