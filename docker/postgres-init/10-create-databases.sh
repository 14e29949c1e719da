#!/usr/bin/env bash
# Creates one role and one database per component: Airflow's metadata, MLflow's tracking and
# registry store (and its auth app's users, in mlflow_auth), and Feast's registry. Each component connects with its own password and owns
# only its own database.
#
# The postgres image runs this once, from /docker-entrypoint-initdb.d, when the data volume is
# empty. It is also safe to run again by hand (existing roles and databases are left alone):
#   docker compose exec postgres bash /docker-entrypoint-initdb.d/10-create-databases.sh
set -eo pipefail

create_role_and_database() {
    local name="$1" password="$2"
    # psql variables (:'name', :'password') are quoted by psql itself, so a password never
    # becomes part of the SQL text.
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
        --set=name="${name}" --set=password="${password}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SQL
    echo "postgres-init: role and database '${name}' ready"
}

create_database() {
    local name="$1" owner="$2"
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
        --set=name="${name}" --set=owner="${owner}" <<'SQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'owner')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
SQL
    echo "postgres-init: database '${name}' (owner '${owner}') ready"
}

create_role_and_database airflow "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD is not set}"
create_role_and_database mlflow "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set}"
create_role_and_database feast "${FEAST_DB_PASSWORD:?FEAST_DB_PASSWORD is not set}"
# MLflow's basic-auth app keeps users and permissions apart from the tracking data.
create_database mlflow_auth mlflow
