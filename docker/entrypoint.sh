#!/usr/bin/env bash
# Entrypoint of the platform image, in front of the Airflow image's own /entrypoint.
#
# In .env an empty value is the way to say "not set" (for real AWS S3: S3_ENDPOINT_URL= , and
# empty keys when an IAM role provides credentials). Compose still passes such a variable as an
# empty string, and boto3 rejects an empty endpoint ("Invalid endpoint: "), which MLflow passes on
# as is. So empty S3/AWS variables are removed before anything starts.
set -euo pipefail

for name in MLOPS_S3_ENDPOINT_URL MLFLOW_S3_ENDPOINT_URL AWS_ENDPOINT_URL \
            AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN; do
    if [[ -v "${name}" && -z "${!name}" ]]; then
        unset "${name}"
    fi
done

# MLOPS_NEXT_ENTRYPOINT exists for the unit test of this script (tests/unit/test_compose.py).
exec "${MLOPS_NEXT_ENTRYPOINT:-/entrypoint}" "$@"
