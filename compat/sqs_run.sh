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

if [[ -z ${PGBROKER_BIN:-} ]]; then
  (cd "$ROOT" && cargo build -q -p pgbroker-cli)
  PGBROKER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/pgbroker
fi
[[ -x $PGBROKER_BIN ]] || { echo "no pgbroker binary at $PGBROKER_BIN" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
SQS_PORT=$(free_port)
MOTO_PORT=$(free_port)
SCHEMA=sqs_compat_$(date +%s)_$$_$RANDOM

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  psql "$DB" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || echo "could not drop schema $SCHEMA" >&2
}
trap cleanup EXIT

# A user with every right on queues, and its access key for boto3's SigV4.
pgb() { "$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" "$@"; }
pgb migrate >/dev/null
echo "compat-password" | pgb user add sqs-compat --password-stdin >/dev/null
for right in produce consume admin; do
  pgb acl add --user sqs-compat --allow "$right" --queue-prefix '' >/dev/null
done
KEY_JSON=$(pgb user key create sqs-compat --format json 2>/dev/null)
SQS_ACCESS_KEY_ID=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["access_key_id"])' "$KEY_JSON")
SQS_SECRET_ACCESS_KEY=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["secret_access_key"])' "$KEY_JSON")
export SQS_ACCESS_KEY_ID SQS_SECRET_ACCESS_KEY

"$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" --log "${PGBROKER_LOG:-info}" serve \
  --kafka-listen "127.0.0.1:$KAFKA_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
  --sqs-listen "127.0.0.1:$SQS_PORT" >"$LOGS/server.log" 2>&1 &
PIDS+=($!)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
PIDS+=($!)

wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "FAIL start: nothing listens on port $1 ($2) after 30s; see $LOGS" >&2
  tail -20 "$LOGS/$2.log" >&2
  exit 1
}
wait_port "$SQS_PORT" server
wait_port "$MOTO_PORT" moto

echo "sqs compat: pgbroker on 127.0.0.1:$SQS_PORT (schema $SCHEMA), moto on 127.0.0.1:$MOTO_PORT, logs in $LOGS"
set +e
"$VENV/bin/python" "$COMPAT/sqs_boto3.py" "http://127.0.0.1:$SQS_PORT" "http://127.0.0.1:$MOTO_PORT" \
  "http://127.0.0.1:$HTTP_PORT/metrics" \
  2>"$LOGS/client.log" | tee "$LOGS/results.txt"
status=${PIPESTATUS[0]}
set -e
if ((status != 0)); then tail -20 "$LOGS/client.log" >&2; fi
exit "$status"
