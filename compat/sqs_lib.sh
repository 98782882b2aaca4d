# What the SQS scenarios (sqs_run.sh, sqs_node_run.sh, celery_run.sh) share.
# Sourced after the script has set ROOT, DB and LOGS. `sqs_start NAME`:
#   - the binary under test (PGBROKER_BIN, else a debug build);
#   - free ports KAFKA_PORT, HTTP_PORT, SQS_PORT and a fresh schema SCHEMA;
#   - on exit: every pid in PIDS stopped, `on_exit` run if the script defines
#     it, the schema dropped;
#   - a user NAME with every right on queues, whose access key is exported as
#     SQS_ACCESS_KEY_ID and SQS_SECRET_ACCESS_KEY for the client's SigV4;
#   - `pgbroker serve` with the SQS listener, waited for.

if [[ -z ${PGBROKER_BIN:-} ]]; then
  (cd "$ROOT" && cargo build -q -p pgbroker-cli)
  PGBROKER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/pgbroker
fi
[[ -x $PGBROKER_BIN ]] || { echo "no pgbroker binary at $PGBROKER_BIN" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits for something to listen on port $1; $2 names its log in $LOGS.
wait_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "FAIL start: nothing listens on port $1 ($2) after 30s; see $LOGS" >&2
  tail -20 "$LOGS/$2.log" >&2
  exit 1
}

PIDS=()
sqs_cleanup() {
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if declare -F on_exit >/dev/null; then on_exit; fi
  psql "$DB" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || echo "could not drop schema $SCHEMA" >&2
}

pgb() { "$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" "$@"; }

json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

sqs_start() {
  local user=$1
  KAFKA_PORT=$(free_port)
  HTTP_PORT=$(free_port)
  SQS_PORT=$(free_port)
  SCHEMA=${user//-/_}_$(date +%s)_$$_$RANDOM
  trap sqs_cleanup EXIT

  pgb migrate >/dev/null
  echo "compat-password" | pgb user add "$user" --password-stdin >/dev/null
  for right in produce consume admin; do
    pgb acl add --user "$user" --allow "$right" --queue-prefix '' >/dev/null
  done
  local key
  key=$(pgb user key create "$user" --format json 2>/dev/null)
  SQS_ACCESS_KEY_ID=$(json_field "$key" access_key_id)
  SQS_SECRET_ACCESS_KEY=$(json_field "$key" secret_access_key)
  export SQS_ACCESS_KEY_ID SQS_SECRET_ACCESS_KEY

  "$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" --log "${PGBROKER_LOG:-info}" serve \
    --kafka-listen "127.0.0.1:$KAFKA_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
    --sqs-listen "127.0.0.1:$SQS_PORT" >"$LOGS/server.log" 2>&1 &
  PIDS+=($!)
  wait_port "$SQS_PORT" server
}

# Runs the client command "$@", its results to the terminal and
# $LOGS/results.txt, its errors to $LOGS/client.log; exits with its status.
sqs_run_client() {
  set +e
  "$@" 2>"$LOGS/client.log" | tee "$LOGS/results.txt"
  local status=${PIPESTATUS[0]}
  set -e
  if ((status != 0)); then tail -20 "$LOGS/client.log" >&2; fi
  exit "$status"
}
