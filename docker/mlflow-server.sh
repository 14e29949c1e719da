#!/usr/bin/env bash
# The MLflow tracking server and model registry of the stack (service mlflow), behind MLflow's
# basic-auth app: every request but /health needs a user and password, and only users with EDIT
# or MANAGE on a registered model can add a version to it or move its aliases (champion).
#
#   mlops-mlflow-server [mlflow server options]     e.g. --host 0.0.0.0 --port 5000 --workers 2
#
# Read from the environment (docker-compose.yaml sets them from .env):
#   MLFLOW_BACKEND_STORE_URI        tracking and registry database (upgraded first)
#   MLFLOW_AUTH_DATABASE_URI        users and permissions (a database of their own)
#   MLFLOW_AUTH_ADMIN_USERNAME      the admin MLflow creates on an empty user store ...
#   MLFLOW_AUTH_ADMIN_PASSWORD      ... with this password (at least 12 characters; read only then)
#   MLFLOW_FLASK_SERVER_SECRET_KEY  CSRF key of the auth app; the same for every worker
#   MLFLOW_AUTH_DEFAULT_PERMISSION  what other users get on resources they did not create (READ)
#
# MLflow reads the database URI of its auth app only from a configuration file, so the file is
# written here at start, readable by this user only, and never lands in the image or a volume.
set -euo pipefail

for name in MLFLOW_BACKEND_STORE_URI MLFLOW_AUTH_DATABASE_URI MLFLOW_AUTH_ADMIN_USERNAME \
            MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY; do
    if [[ -z "${!name:-}" ]]; then
        echo "mlflow-server: ${name} is not set; it comes from .env through docker-compose.yaml" >&2
        exit 2
    fi
done

umask 077
config_dir=$(mktemp -d -t mlflow-auth.XXXXXX)
export MLFLOW_AUTH_CONFIG_PATH="${config_dir}/basic_auth.ini"
# configparser reads "%" as interpolation: a URL-encoded password needs it doubled.
cat >"${MLFLOW_AUTH_CONFIG_PATH}" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI//%/%%}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

# Upgrading the schema first makes a new MLflow version in the image safe to roll out.
mlflow db upgrade "${MLFLOW_BACKEND_STORE_URI}"
exec mlflow server --app-name basic-auth "$@"
