#!/usr/bin/env bash
# pgbroker's SQL functions through real Postgres drivers, and the outbox
# checked with a real Kafka client:
#
#   compat/sql/run.sh
#
# psycopg 3 (PyPI, in compat/sql/.venv) and node-postgres (npm, in
# compat/sql/node) each send, receive, ack, nack and take through the functions,
# check refusals, and produce to a topic in a transaction rolled back once
# and committed once. kcat then reads the topic through `pgbroker serve`
# and must see exactly the committed records.
#
# Environment: PGBROKER_BIN (default: cargo build), PGBROKER_TEST_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/test). Needs the drivers that
# scripts/setup.sh installs and fails, never skips, without them. Prints
# PASS/FAIL lines; exits 1 if any check failed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DB=${PGBROKER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}

missing() { echo "FAIL $1 is not installed: run scripts/setup.sh"; exit 1; }
"$HERE/.venv/bin/python" -c 'import psycopg' 2>/dev/null || missing psycopg
[[ -f $HERE/node/node_modules/pg/package.json ]] || missing node-postgres
command -v kcat >/dev/null || missing kcat

if [[ -z ${PGBROKER_BIN:-} ]]; then
  (cd "$ROOT" && cargo build -q -p pgbroker-cli)
  PGBROKER_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/pgbroker
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
while [[ $HTTP_PORT == "$KAFKA_PORT" ]]; do HTTP_PORT=$(free_port); done
SCHEMA=sqlcompat_$(date +%s)_$$_$RANDOM
BOOTSTRAP=127.0.0.1:$KAFKA_PORT
WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  psql "$DB" -qc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1 || echo "could not drop schema $SCHEMA" >&2
  rm -rf "$WORK"
}
trap cleanup EXIT

pgb() { timeout 60 "$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" "$@"; }
pgb migrate >/dev/null
pgb queue create py_jobs >/dev/null
pgb queue create node_jobs >/dev/null
pgb topic create orders --partitions 3 >/dev/null

rc=0
: >"$WORK/expected"
"$HERE/.venv/bin/python" "$HERE/psycopg_client.py" "$DB" "$SCHEMA" py_jobs orders "$WORK/expected" || rc=1
node "$HERE/node/pg_client.mjs" "$DB" "$SCHEMA" node_jobs orders "$WORK/expected" || rc=1

"$PGBROKER_BIN" --database-url "$DB" --schema "$SCHEMA" serve --kafka-listen "$BOOTSTRAP" \
  --http-listen "127.0.0.1:$HTTP_PORT" --advertised-listener "$BOOTSTRAP" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "FAIL pgbroker serve exited: $(tail -5 "$WORK/server.log")"; exit 1; }
  sleep 0.1
done
if timeout 60 kcat -b "$BOOTSTRAP" -C -t orders -o beginning -e -q -f '%k %s\n' >"$WORK/read" 2>"$WORK/kcat.err"; then
  if diff <(sort "$WORK/expected") <(sort "$WORK/read") >"$WORK/diff"; then
    echo "PASS kcat reads exactly the committed records ($(wc -l <"$WORK/read") of them)"
  else
    echo "FAIL kcat read other records than were committed (< expected, > read):"
    sed 's/^/  /' "$WORK/diff"
    rc=1
  fi
else
  echo "FAIL kcat exited $?: $(tail -3 "$WORK/kcat.err")"
  rc=1
fi
# Keys keep their partition: kcat's view of where user-1 landed is the
# partitioner's.
if [[ $rc == 0 ]]; then
  parts=$(timeout 60 kcat -b "$BOOTSTRAP" -C -t orders -o beginning -e -q -f '%k %p\n' | awk '$1 == "user-1" { print $2 }' | sort -u)
  want=$(psql "$DB" -Atc "SELECT \"$SCHEMA\".partition_for_key('user-1'::bytea, 3)")
  if [[ $parts == "$want" ]]; then
    echo "PASS records keyed user-1 are all in partition $want"
  else
    echo "FAIL records keyed user-1 in partitions [$parts], the partitioner says $want"
    rc=1
  fi
fi
[[ -s $WORK/expected ]] || { echo "FAIL no client committed any record"; rc=1; }
exit $rc
