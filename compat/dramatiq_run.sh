#!/usr/bin/env bash
# The Dramatiq compatibility scenario: a Dramatiq worker whose broker is
# dramatiq-sqs's SQSBroker pointed at `pgbroker serve --sqs-listen` on a
# real PostgreSQL, signing with an access key of a pgbroker user.
#
# Environment:
#   PGBROKER_BIN                the binary to test (default: cargo build)
#   PGBROKER_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
#   COMPAT_LOG_DIR              where logs go (default compat/logs/dramatiq-<time>)
#
# Needs dramatiq and dramatiq-sqs (with boto3) in compat/.venv-dramatiq
# (scripts/setup.sh installs them) and fails without them. Exits 1 if any
# check failed.
set -euo pipefail

COMPAT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$COMPAT")
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
LOGS=${COMPAT_LOG_DIR:-$COMPAT/logs/dramatiq-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGS"

VENV=$COMPAT/.venv-dramatiq
"$VENV/bin/python" -c 'import dramatiq, dramatiq_sqs, boto3' 2>/dev/null ||
  { echo "dramatiq_run.sh: dramatiq and dramatiq-sqs are not in $VENV: run scripts/setup.sh" >&2; exit 1; }

WORK=$(mktemp -d)
on_exit() {
  cp "$WORK"/*.log "$LOGS/" 2>/dev/null || true
  rm -rf "$WORK"
}
# shellcheck source=compat/sqs_lib.sh
source "$COMPAT/sqs_lib.sh"
sqs_start dramatiq-compat

echo "dramatiq compat: pgbroker on 127.0.0.1:$SQS_PORT (schema $SCHEMA), logs in $LOGS"
sqs_run_client "$VENV/bin/python" "$COMPAT/dramatiq_scenario.py" "http://127.0.0.1:$SQS_PORT" "$WORK"
