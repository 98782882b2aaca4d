#!/usr/bin/env bash
# The SQS compatibility scenario: boto3 against `pgbroker serve --sqs-listen`
# on a real PostgreSQL, signing with an access key of a pgbroker user, and
# the same scenario against moto_server as a reference whose response
# shapes are compared with ours.
#
# Environment:
#   PGBROKER_BIN                the binary to test (default: cargo build)
#   PGBROKER_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
#   COMPAT_LOG_DIR              where logs go (default compat/logs/sqs-<time>)
#
# Needs boto3 and moto in compat/.venv-sqs (scripts/setup.sh installs them)
# and fails without them. Exits 1 if any check failed.
set -euo pipefail

COMPAT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$COMPAT")
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
LOGS=${COMPAT_LOG_DIR:-$COMPAT/logs/sqs-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGS"

VENV=$COMPAT/.venv-sqs
"$VENV/bin/python" -c 'import boto3, moto, flask' 2>/dev/null ||
  { echo "sqs_run.sh: boto3 and moto are not installed in $VENV: run scripts/setup.sh" >&2; exit 1; }

# shellcheck source=compat/sqs_lib.sh
source "$COMPAT/sqs_lib.sh"
sqs_start sqs-compat
MOTO_PORT=$(free_port)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
PIDS+=($!)
wait_port "$MOTO_PORT" moto

echo "sqs compat: pgbroker on 127.0.0.1:$SQS_PORT (schema $SCHEMA), moto on 127.0.0.1:$MOTO_PORT, logs in $LOGS"
sqs_run_client "$VENV/bin/python" "$COMPAT/sqs_boto3.py" "http://127.0.0.1:$SQS_PORT" "http://127.0.0.1:$MOTO_PORT" \
  "http://127.0.0.1:$HTTP_PORT/metrics"
