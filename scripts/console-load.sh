#!/usr/bin/env bash
# Measures the console's cost; asserts nothing. On a fresh schema:
#   1. a topic of 1,000 partitions with records in each, and a group with
#      committed offsets, lagging, on every partition;
#   2. the admin API's answer times for the pages on them (curl, median of
#      RUNS calls);
#   3. the pages' load times in chromium until their data is drawn
#      (compat/console/load.mjs, median of RUNS loads);
#   4. kcat's produce throughput to `pgbroker serve`, with no console page
#      open, with chromium open on an empty page (its own CPU use on this
#      machine), with the overview open and refreshing, and with
#      --no-console: ROUNDS rounds of RECORDS records each, alternating.
# Prints one line per measurement. Needs what scripts/setup.sh installs.
# With RESULTS=file.jsonl, step 3's times are also appended to that file
# as pgbroker-bench `page-load` lines (system `chromium`), which
# `pgbroker-bench report` shows beside its own `console-pages` figures.
#
#   scripts/console-load.sh [--bin target/release/pgbroker]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ROOT}/target/debug/pgbroker
[[ ${1:-} == --bin ]] && BIN=$(realpath "$2")
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
RUNS=${RUNS:-7}
ROUNDS=${ROUNDS:-3}
RECORDS=${RECORDS:-200000}
SCHEMA=console_load_$(date +%s)_$$
USER_NAME=load-admin
PASSWORD=load-password-1
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/console-load.XXXXXX")
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pgb() { "$BIN" --database-url "$DB" --schema "$SCHEMA" "$@"; }
SERVER=
stop_server() { [[ -n $SERVER ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null; SERVER=; return 0; }
cleanup() { stop_server; psql "$DB" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || true; }
trap cleanup EXIT
start_server() {
  KAFKA_PORT=$(free_port)
  HTTP_PORT=$(free_port)
  "$BIN" --database-url "$DB" --schema "$SCHEMA" --log warn serve --kafka-listen "127.0.0.1:$KAFKA_PORT" \
    --http-listen "127.0.0.1:$HTTP_PORT" "$@" >>"$LOGS/server.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break; sleep 0.1; done
  URL=http://127.0.0.1:$HTTP_PORT
}

pgb migrate >/dev/null
echo "$PASSWORD" | pgb user add "$USER_NAME" --password-stdin >/dev/null
for right in produce consume admin; do pgb acl add --user "$USER_NAME" --allow "$right" --topic-prefix '' >/dev/null; done
pgb acl add --user "$USER_NAME" --allow group --group-prefix '' >/dev/null
pgb topic create wide --partitions 1000 >/dev/null
pgb topic create bench --partitions 1 >/dev/null
seq 1 20000 | awk '{print "key-" $1 ":value-" $1}' | pgb produce wide --key-separator : >/dev/null
start_server
kcat -b "127.0.0.1:$KAFKA_PORT" -G wide-readers -X auto.offset.reset=earliest -e -q wide >/dev/null 2>&1 || true
seq 1 20000 | awk '{print "key-" $1 ":more-" $1}' | pgb produce wide --key-separator : >/dev/null
echo "console load: $(nproc) cores; topic wide of 1,000 partitions, 40,000 records; group wide-readers lagging on every partition"

login=$(curl -sS -D "$LOGS/h" -H 'Content-Type: application/json' -d "{\"user\":\"$USER_NAME\",\"password\":\"$PASSWORD\"}" "$URL/api/login")
token=$(sed -n 's/^set-cookie: pgbroker_console=\([^;]*\);.*/\1/ip' "$LOGS/h" | tr -d '\r')
sleep 6 # a sample or two of the history
for path in /api/overview /api/topics /api/topics/wide /api/groups /api/groups/wide-readers \
  '/api/topics/wide/messages?partition=7&limit=200' '/api/topics/wide/messages?key=key-77' /api/history; do
  for _ in $(seq 1 "$RUNS"); do
    curl -s -o "$LOGS/body" -w '%{time_total}\n' -H "Cookie: pgbroker_console=$token" "$URL$path"
  done >"$LOGS/times"
  sort -n "$LOGS/times" | awk -v p="$path" -v b="$(wc -c <"$LOGS/body")" '{ t[NR] = $1 }
    END { printf "api %s: median %.1f ms, max %.1f ms, %d bytes\n", p, t[int((NR + 1) / 2)] * 1000, t[NR] * 1000, b }'
done
[[ -n ${RESULTS:-} ]] && RESULTS=$(realpath "$RESULTS")
(cd "$ROOT/compat/console" && CONSOLE_URL=$URL CONSOLE_USER=$USER_NAME CONSOLE_PASSWORD=$PASSWORD RUNS=$RUNS \
  RESULTS=${RESULTS:-} PARTITIONS=1000 PAGES='topics/wide=of 1000,groups/wide-readers=of 1000,topics/wide/messages=showing,overview=sampled,topics=wide' node load.mjs)

produce_rate() {
  local t0 t1
  t0=$(date +%s.%N)
  seq 1 "$RECORDS" | kcat -b "127.0.0.1:$KAFKA_PORT" -P -t bench -X linger.ms=5 -X queue.buffering.max.messages=1000000
  t1=$(date +%s.%N)
  awk -v n="$RECORDS" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}
hold() {
  (cd "$ROOT/compat/console" && CONSOLE_URL=$URL CONSOLE_USER=$USER_NAME CONSOLE_PASSWORD=$PASSWORD HOLD=600 "$@" \
    node load.mjs >/dev/null 2>&1) &
  viewer=$!
  sleep 4
}
unhold() { kill "$viewer" 2>/dev/null; wait "$viewer" 2>/dev/null || true; }
for round in $(seq 1 "$ROUNDS"); do
  closed=$(produce_rate)
  hold env HOLD_BLANK=1
  blank=$(produce_rate)
  unhold
  hold env
  open=$(produce_rate)
  unhold
  stop_server
  start_server --no-console
  off=$(produce_rate)
  stop_server
  start_server
  echo "produce round $round: $RECORDS records with kcat: no page open $closed rec/s," \
    "chromium on an empty page $blank rec/s, overview open $open rec/s, --no-console $off rec/s"
done
