# The platform image: Airflow 3.3 with the ML stack from requirements.txt and the project's code.
# One image runs every Airflow component, the MLflow tracking server, the scoring service and the
# Evidently UI, so they all import the same versions of the same code.
#
#   docker compose build            (or: docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) .)
FROM apache/airflow:3.3.2-python3.11

USER root
# Empty S3/AWS variables from .env are unset before Airflow's own entrypoint runs (see the script).
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/mlops-entrypoint
# The MLflow tracking server behind MLflow's basic-auth app (service mlflow).
COPY --chmod=0755 docker/mlflow-server.sh /usr/local/bin/mlops-mlflow-server
# Group 0 owns and may write everything, as in the Airflow image: the stack may run under any UID.
RUN mkdir -p /opt/airflow/project /opt/airflow/mlops/evidently /opt/airflow/auth \
    && chown -R airflow:0 /opt/airflow/project /opt/airflow/mlops /opt/airflow/auth \
    && chmod -R g+rwX /opt/airflow/project /opt/airflow/mlops /opt/airflow/auth
USER airflow

# Dependencies before code, so this layer is rebuilt only when the lock file changes. Pinning
# apache-airflow to the image's version stops pip from ever swapping Airflow itself.
COPY --chown=airflow:0 requirements.txt /opt/airflow/project/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/project/requirements.txt

COPY --chown=airflow:0 include/ /opt/airflow/project/include/
COPY --chown=airflow:0 dags/ /opt/airflow/project/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/project/plugins/
COPY --chown=airflow:0 feature_repo/ /opt/airflow/project/feature_repo/

# The image has no .git: the commit recorded in model lineage tags comes from the build.
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.revision="${GIT_COMMIT}"
ENV PYTHONPATH=/opt/airflow/project \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/project/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/project/plugins \
    MLOPS_FEAST_REPO=/opt/airflow/project/feature_repo \
    MLOPS_GIT_COMMIT="${GIT_COMMIT}" \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=false

# Fail the build, not the first task, if the stack does not import together.
RUN python -c "import include.mlops.config, mlflow, feast, great_expectations, evidently, sklearn, psycopg2, flask_wtf"

ENTRYPOINT ["/usr/bin/dumb-init", "--", "/usr/local/bin/mlops-entrypoint"]
CMD []
