"""The platform's Airflow plugin (listed by `airflow plugins`).

Its extra links need no registration here: in Airflow 3 they belong to the operator classes
(`operator_extra_links` in `mlops_airflow.operators`), are computed on the worker when a task
ends and read back by the api-server from XCom (see `mlops_airflow.links`). A plugin link bound
to those operators would instead run `get_link` on the api-server, where the task SDK's XCom
cannot be read, so none is bound.
"""

from airflow.plugins_manager import AirflowPlugin


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
