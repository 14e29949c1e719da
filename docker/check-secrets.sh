#!/bin/sh
# One-shot job (service check-secrets), the first of the stack: every other service waits for it
# to exit 0, so nothing starts with a secret nobody set.
#
# Compose's ${VAR:?message} already stops `docker compose up` when a secret is unset or empty, but
# compose cannot compare values: this script refuses what .env.example ships (the change-me
# placeholders) and values too short to be generated ones, and names every variable at fault.
#
#   check-secrets.sh NAME...    each NAME must hold a secret of at least 12 characters
#   check-secrets.sh NAME?      the same, but NAME may also be set and empty (the AWS keys:
#                               empty means "use the IAM role", see .env.example)
#
# Values are never printed. POSIX sh: it runs in the postgres image, before the platform's.
set -eu

MIN_LENGTH=12 # MLflow's own minimum for passwords; `openssl rand -hex 24` gives 48

if [ "$#" -eq 0 ]; then
    echo "check-secrets: no variable names given (usage: check-secrets.sh NAME [NAME?] ...)" >&2
    exit 2
fi

bad=0
for spec in "$@"; do
    name=${spec%\?}
    case "$name" in
    '' | [0-9]* | *[!A-Za-z0-9_]*)
        echo "check-secrets: '$spec' is not a variable name" >&2
        exit 2
        ;;
    esac
    # the name is validated above, so eval only ever reads one variable
    eval "is_set=\${$name+set} value=\${$name-}"
    if [ -z "$value" ]; then
        if [ "$spec" != "$name" ] && [ "$is_set" = set ]; then
            continue
        fi
        echo "check-secrets: $name is empty or not set" >&2
        bad=$((bad + 1))
        continue
    fi
    lower=$(printf '%s' "$value" | tr 'A-Z' 'a-z')
    case "$lower" in
    *change-me* | *change_me* | *changeme*)
        echo "check-secrets: $name still holds the change-me placeholder of .env.example" >&2
        bad=$((bad + 1))
        continue
        ;;
    esac
    if [ "${#value}" -lt "$MIN_LENGTH" ]; then
        echo "check-secrets: $name has ${#value} characters; use at least $MIN_LENGTH" >&2
        bad=$((bad + 1))
    fi
done

if [ "$bad" -gt 0 ]; then
    echo "check-secrets: $bad secret(s) above refused: edit .env (copied from .env.example), give each" \
        "a generated value such as \`openssl rand -hex 24\` (the comments in .env.example say how)," \
        "then run \`docker compose up -d\` again" >&2
    exit 1
fi
echo "check-secrets: $# secrets checked, none refused"
