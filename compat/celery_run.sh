#!/usr/bin/env bash
# The Celery compatibility scenario: Celery workers whose broker is kombu's
# SQS transport pointed at `pgbroker serve --sqs-listen` on a real
# PostgreSQL, signing with an access key of a pgbroker user.
#
# Environment:
#   PGBROKER_BIN                the binary to test (default: cargo build)
#   PGBROKER_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
#   COMPAT_LOG_DIR              where logs go (default compat/logs/celery-<time>)
#
# Needs celery, kombu[sqs] (with pycurl) and boto3 in compat/.venv-celery
# (scripts/setup.sh installs them) and fails without them. Exits 1 if any
# check failed.
set -euo pipefail

COMPAT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$COMPAT")
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
LOGS=${COMPAT_LOG_DIR:-$COMPAT/logs/celery-$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGS"

VENV=$COMPAT/.venv-celery
IMPORTS='import celery, kombu.transport.SQS, pycurl, boto3'
"$VENV/bin/python" -c "$IMPORTS" 2>/dev/null ||
  { echo "celery_run.sh: Celery, kombu[sqs], pycurl and boto3 are not in $VENV: run scripts/setup.sh" >&2; exit 1; }

if [[ -z ${PGBROKER_BIN:-} ]]; then
  (cd "$ROOT" && cargo build -q -p pgbroker-cli)
  PGBROKER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/pgbroker
fi
[[ -x $PGBROKER_BIN ]] || { echo "no pgbroker binary at $PGBROKER_BIN" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
SQS_PORT=$(free_port)
SCHEMA=celery_compat_$(date +%s)_$$_$RANDOM
WORK=$(mktemp -d)

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  cp "$WORK"/*.log "$LOGS/" 2>/dev/null || true
  rm -rf "$WORK"
  psql "$DB" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || echo "could not drop schema $SCHEMA" >&2
}
trap cleanup EXIT

# A user with every right on queues, and its access key for kombu's SigV4.
pgb() { "$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" "$@"; }
pgb migrate >/dev/null
echo "compat-password" | pgb user add celery-compat --password-stdin >/dev/null
for right in produce consume admin; do
  pgb acl add --user celery-compat --allow "$right" --queue-prefix '' >/dev/null
done
KEY_JSON=$(pgb user key create celery-compat --format json 2>/dev/null)
SQS_ACCESS_KEY_ID=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["access_key_id"])' "$KEY_JSON")
SQS_SECRET_ACCESS_KEY=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["secret_access_key"])' "$KEY_JSON")
export SQS_ACCESS_KEY_ID SQS_SECRET_ACCESS_KEY

"$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" --log "${PGBROKER_LOG:-info}" serve \
  --kafka-listen "127.0.0.1:$KAFKA_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
  --sqs-listen "127.0.0.1:$SQS_PORT" >"$LOGS/server.log" 2>&1 &
PIDS+=($!)

for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$SQS_PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$SQS_PORT") 2>/dev/null; then
  echo "FAIL start: nothing listens on port $SQS_PORT after 30s; see $LOGS" >&2
  tail -20 "$LOGS/server.log" >&2
  exit 1
fi

echo "celery compat: pgbroker on 127.0.0.1:$SQS_PORT (schema $SCHEMA), logs in $LOGS"
set +e
"$VENV/bin/python" "$COMPAT/celery_scenario.py" "http://127.0.0.1:$SQS_PORT" "$WORK" \
  2>"$LOGS/client.log" | tee "$LOGS/results.txt"
status=${PIPESTATUS[0]}
set -e
if ((status != 0)); then tail -20 "$LOGS/client.log" >&2; fi
exit "$status"
