#!/usr/bin/env bash
# SQS authentication with boto3: `pgbroker serve --sqs-listen` without
# anonymous access, two users with access keys made by the CLI, and
# compat/sqs_auth.py checking signed, refused and stale requests.
#
# Environment:
#   PGBROKER_BIN                the binary to test (default: cargo build)
#   PGBROKER_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
#
# Needs boto3 (pip install boto3). Exits 1 if any check failed.
set -euo pipefail

COMPAT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$COMPAT")
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PYTHON=python3
[[ -x $COMPAT/.venv-sqs/bin/python ]] && PYTHON=$COMPAT/.venv-sqs/bin/python
"$PYTHON" -c 'import boto3' || { echo "sqs_auth_run.sh: boto3 is not installed" >&2; exit 1; }

if [[ -z ${PGBROKER_BIN:-} ]]; then
  (cd "$ROOT" && cargo build -q -p pgbroker-cli)
  PGBROKER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/pgbroker
fi
SCHEMA=sqs_auth_$(date +%s)_$$_$RANDOM
pgb() { "$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" "$@"; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
LOG=$(mktemp)
SERVER=
cleanup() {
  if [[ -n $SERVER ]]; then kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  psql "$DB" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || echo "could not drop schema $SCHEMA" >&2
  rm -f "$LOG"
}
trap cleanup EXIT

pgb user add alice --password alice-pw >/dev/null
pgb user add bob --password bob-pw >/dev/null
for right in admin produce consume; do
  pgb acl add --user alice --allow "$right" --queue-prefix auth- >/dev/null
done
key() { pgb user key create "$1" --format json 2>/dev/null |
  "$PYTHON" -c 'import json, sys; k = json.load(sys.stdin); print(k["access_key_id"], k["secret_access_key"])'; }
read -r ALICE_ID ALICE_SECRET < <(key alice)
read -r BOB_ID BOB_SECRET < <(key bob)

SQS_PORT=$(free_port)
# The binary itself, not through `pgb`: a function run in the background is
# a subshell, and the TERM of the clean-up would stop it, not the server.
"$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" serve --kafka-listen "127.0.0.1:$(free_port)" \
  --http-listen "127.0.0.1:$(free_port)" --sqs-listen "127.0.0.1:$SQS_PORT" >"$LOG" 2>&1 &
SERVER=$!
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$SQS_PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
if ! "$PYTHON" "$COMPAT/sqs_auth.py" "http://127.0.0.1:$SQS_PORT" "$ALICE_ID" "$ALICE_SECRET" "$BOB_ID" "$BOB_SECRET"; then
  tail -n 30 "$LOG" >&2
  exit 1
fi
