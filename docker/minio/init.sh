#!/bin/sh
# One-shot job (service minio-init): creates the platform's bucket, and a MinIO user for the
# platform that can reach only that bucket, so Airflow, MLflow and the scoring service never hold
# MinIO's root credentials. Safe to run again: every step is idempotent.
set -eu

: "${MLOPS_BUCKET:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$MLOPS_BUCKET"

if [ -z "${AWS_ACCESS_KEY_ID:-}" ] || [ -z "${AWS_SECRET_ACCESS_KEY:-}" ]; then
    # Empty keys in .env: the platform uses real S3 through an IAM role, not this MinIO.
    echo "minio-init: no platform keys set; bucket created, no MinIO user added"
    exit 0
fi
if [ "$AWS_ACCESS_KEY_ID" = "$MINIO_ROOT_USER" ]; then
    echo "minio-init: the platform uses MinIO's root user; no bucket-scoped user created"
    exit 0
fi

cat > /tmp/mlops-readwrite.json <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
      "Resource": ["arn:aws:s3:::$MLOPS_BUCKET"]
    },
    {
      "Effect": "Allow",
      "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject",
                 "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
      "Resource": ["arn:aws:s3:::$MLOPS_BUCKET/*"]
    }
  ]
}
JSON
mc admin policy create local mlops-readwrite /tmp/mlops-readwrite.json
mc admin user add local "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY"
# `attach` fails when the policy is already attached (a re-run): accept that case only.
mc admin policy attach local mlops-readwrite --user "$AWS_ACCESS_KEY_ID" \
    || mc admin user info local "$AWS_ACCESS_KEY_ID" | grep -q mlops-readwrite
echo "minio-init: bucket '$MLOPS_BUCKET' and user '$AWS_ACCESS_KEY_ID' ready"
