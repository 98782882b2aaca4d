#!/usr/bin/env bash
# The Kafka client compatibility suite: real clients against a real
# `pgbroker serve` on a real PostgreSQL.
#
#   compat/run.sh [client...]
#
# Clients (all by default):
#   kcat              kcat with Debian's librdkafka 2.0.2
#   confluent-debian  Debian's python3-confluent-kafka (librdkafka 2.0.2), the
#                     SIGKILL group scenario, the compacted topic and the
#                     transaction scenarios
#   confluent-pypi    PyPI confluent-kafka (bundled librdkafka), the SIGKILL
#                     group scenario, the compacted topic, the
#                     transaction scenarios, the consumer group protocol
#                     (KIP-848) scenarios and the share group (KIP-932)
#                     scenarios
#   kafka-python      PyPI kafka-python, the compacted topic and the
#                     transaction scenarios
#   kafka-python-debian  Debian's python3-kafka (kafka-python 2.0.2)
#   aiokafka          PyPI aiokafka, and the transaction scenarios
#   kafkajs           kafkajs from compat/node, and its transaction and compaction scenarios
#
# Environment:
#   PGBROKER_BIN                the binary to test (default: cargo build)
#   PGBROKER_TEST_DATABASE_URL  default postgres://postgres@127.0.0.1:5432/test
#   COMPAT_DEBUG=1              clients log their protocol traffic to the logs
#   COMPAT_LOG_DIR              where logs go (default compat/logs/<time>)
#
# Checks that the clients are installed (scripts/setup.sh installs them),
# starts the server on free ports in a fresh schema, runs every scenario of every client, stops the server with
# SIGTERM and drops the schema. Exits 1 if any scenario failed.
set -euo pipefail

COMPAT=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$COMPAT")
ALL_CLIENTS=(kcat confluent-debian confluent-pypi kafka-python kafka-python-debian aiokafka kafkajs)
CLIENTS=("$@")
if ((${#CLIENTS[@]} == 0)); then CLIENTS=("${ALL_CLIENTS[@]}"); fi
for c in "${CLIENTS[@]}"; do
  [[ " ${ALL_CLIENTS[*]} " == *" $c "* ]] || { echo "unknown client $c (known: ${ALL_CLIENTS[*]})" >&2; exit 2; }
done

DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
LOGS=${COMPAT_LOG_DIR:-$COMPAT/logs/$(date +%Y%m%d-%H%M%S)-$$}
mkdir -p "$LOGS"
DEBUG=${COMPAT_DEBUG:-0}

missing() { echo "compat: $1 is missing; run scripts/setup.sh" >&2; exit 1; }
command -v kcat >/dev/null || missing kcat
/usr/bin/python3 -c 'import confluent_kafka, kafka' 2>/dev/null || missing "Debian's python3-confluent-kafka or python3-kafka"
"$COMPAT/.venv/bin/python" -c 'import confluent_kafka, kafka, aiokafka' 2>/dev/null || missing compat/.venv
node -e "require('$COMPAT/node/node_modules/kafkajs')" 2>/dev/null || missing "kafkajs in compat/node"

if [[ -z ${PGBROKER_BIN:-} ]]; then
  (cd "$ROOT" && cargo build -q -p pgbroker-cli)
  PGBROKER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/pgbroker
fi
[[ -x $PGBROKER_BIN ]] || { echo "no pgbroker binary at $PGBROKER_BIN" >&2; exit 1; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ $HTTP_PORT == "$KAFKA_PORT" ]]; do HTTP_PORT=$(free_port); done
SCHEMA=compat_$(date +%s)_$$_$RANDOM
BOOTSTRAP=127.0.0.1:$KAFKA_PORT

export PGBROKER_BIN PGBROKER_DATABASE_URL=$DB PGBROKER_SCHEMA=$SCHEMA

SERVER_PID=
stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "FAIL server shutdown: still running 10s after SIGTERM; killed" | tee -a "$LOGS/results.txt"
      kill -KILL "$SERVER_PID"
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
cleanup() {
  stop_server
  psql "$DB" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || echo "could not drop schema $SCHEMA" >&2
}
trap cleanup EXIT

echo "compat: pgbroker serve on $BOOTSTRAP (http 127.0.0.1:$HTTP_PORT), schema $SCHEMA, logs in $LOGS"
"$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" --log "${PGBROKER_LOG:-info}" serve \
  --kafka-listen "$BOOTSTRAP" --http-listen "127.0.0.1:$HTTP_PORT" --advertised-listener "$BOOTSTRAP" \
  --group-consumer-session-timeout 6s --group-consumer-heartbeat-interval 1s \
  >"$LOGS/server.log" 2>&1 &
SERVER_PID=$!

ready=0
for _ in $(seq 1 300); do
  kill -0 "$SERVER_PID" 2>/dev/null || break
  if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.1
done
if ((ready == 0)); then
  echo "FAIL server start: pgbroker serve did not listen on $BOOTSTRAP within 30s; its log:" >&2
  tail -20 "$LOGS/server.log" >&2
  exit 1
fi

DEBUG_PY=()
if [[ $DEBUG == 1 ]]; then DEBUG_PY=(--debug); fi

# Runs one client's scenarios: result lines to the terminal and
# results.txt, everything else to the client's log.
run_client() {
  local client=$1 prefix
  prefix=$(echo "$client" | tr -c 'a-z0-9\n' '_')_
  case $client in
    kcat) KCAT_DEBUG=$DEBUG "$COMPAT/kcat.sh" "$BOOTSTRAP" "$prefix" ;;
    confluent-debian | confluent-pypi)
      # The same scenarios with Debian's binding or PyPI's, then SIGKILL.
      local py=/usr/bin/python3 rc=0
      if [[ $client == confluent-pypi ]]; then py=$COMPAT/.venv/bin/python; fi
      "$py" "$COMPAT/python_clients.py" "$BOOTSTRAP" "$prefix" --client confluent --label "$client" \
        "${DEBUG_PY[@]}" || rc=1
      "$py" "$COMPAT/sigkill.py" "$BOOTSTRAP" "${prefix}sk_" --label "$client" "${DEBUG_PY[@]}" || rc=1
      "$py" "$COMPAT/compaction.py" "$BOOTSTRAP" "${prefix}cp_" --client confluent --label "$client" \
        "${DEBUG_PY[@]}" || rc=1
      "$py" "$COMPAT/transactions.py" "$BOOTSTRAP" "${prefix}tx_" --client confluent --label "$client" \
        "${DEBUG_PY[@]}" || rc=1
      # Debian's librdkafka 2.0.2 has no consumer group protocol.
      if [[ $client == confluent-pypi ]]; then
        "$py" "$COMPAT/consumer_protocol.py" "$BOOTSTRAP" "${prefix}cg_" --label "$client" \
          "${DEBUG_PY[@]}" || rc=1
        "$py" "$COMPAT/share_groups.py" "$BOOTSTRAP" "${prefix}sg_" --label "$client" \
          "${DEBUG_PY[@]}" || rc=1
      fi
      return $rc
      ;;
    kafka-python-debian)
      /usr/bin/python3 "$COMPAT/python_clients.py" "$BOOTSTRAP" "$prefix" --client kafka-python \
        --label "$client" "${DEBUG_PY[@]}" ;;
    kafka-python)
      local rc=0
      "$COMPAT/.venv/bin/python" "$COMPAT/python_clients.py" "$BOOTSTRAP" "$prefix" --client "$client" \
        "${DEBUG_PY[@]}" || rc=1
      "$COMPAT/.venv/bin/python" "$COMPAT/compaction.py" "$BOOTSTRAP" "${prefix}cp_" --client "$client" \
        "${DEBUG_PY[@]}" || rc=1
      # kafka-python 2.0.2 (Debian's) has no transactional producer; 3.x does.
      "$COMPAT/.venv/bin/python" "$COMPAT/transactions.py" "$BOOTSTRAP" "${prefix}tx_" --client "$client" \
        "${DEBUG_PY[@]}" || rc=1
      return $rc
      ;;
    aiokafka)
      local rc=0
      "$COMPAT/.venv/bin/python" "$COMPAT/python_clients.py" "$BOOTSTRAP" "$prefix" --client "$client" \
        "${DEBUG_PY[@]}" || rc=1
      "$COMPAT/.venv/bin/python" "$COMPAT/transactions.py" "$BOOTSTRAP" "${prefix}tx_" --client "$client" \
        "${DEBUG_PY[@]}" || rc=1
      return $rc
      ;;
    kafkajs)
      local rc=0
      node "$COMPAT/node/kafkajs.mjs" "$BOOTSTRAP" "$prefix" "${DEBUG_PY[@]}" || rc=1
      node "$COMPAT/node/transactions.mjs" "$BOOTSTRAP" "${prefix}tx_" "${DEBUG_PY[@]}" || rc=1
      node "$COMPAT/node/compaction.mjs" "$BOOTSTRAP" "${prefix}cp_" "${DEBUG_PY[@]}" || rc=1
      return $rc
      ;;
  esac
}

failed=0
for client in "${CLIENTS[@]}"; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL $client: the server exited before the client ran; its log ends:" | tee -a "$LOGS/results.txt"
    tail -5 "$LOGS/server.log"
    failed=1
    continue
  fi
  set +e
  run_client "$client" 2>"$LOGS/$client.err" | tee "$LOGS/$client.out" | grep -E '^(PASS|FAIL|SKIP|#)' \
    | tee -a "$LOGS/results.txt"
  rc=${PIPESTATUS[0]}
  set -e
  if ((rc != 0)); then
    failed=1
    grep -q '^FAIL' "$LOGS/$client.out" \
      || echo "FAIL $client: exited $rc without a FAIL line; see $LOGS/$client.err" | tee -a "$LOGS/results.txt"
  fi
done

stop_server
passed=$(grep -c '^PASS' "$LOGS/results.txt" || true)
nfailed=$(grep -c '^FAIL' "$LOGS/results.txt" || true)
skipped=$(grep -c '^SKIP' "$LOGS/results.txt" || true)
echo "logs: $LOGS"
if ((nfailed > 0 || failed != 0)); then
  # What the server said went wrong, where a failing run's output shows it.
  echo "server warnings and errors (last 40):"
  grep -E ' (WARN|ERROR) ' "$LOGS/server.log" | tail -40 || echo "(none)"
fi
echo "compat: $passed passed, $nfailed failed, $skipped skipped"
if ((nfailed > 0)); then failed=1; fi
exit $failed
