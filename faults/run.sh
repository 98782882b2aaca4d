#!/usr/bin/env bash
# Fault tests: each scenario starts its own PostgreSQL cluster and brokers,
# injects its fault under load from real Kafka clients, and checks that
# nothing acknowledged was lost.
#
#   faults/run.sh                    short form (debug binary, 6 s of faults per scenario;
#                                    two Patroni scenarios left to the long form)
#   faults/run.sh --long [--scenario NAME]...   long form (release binary, minutes
#                                    per scenario; rewrites RELIABILITY.md from the
#                                    measurements, keeping the rows of scenarios not run)
#   faults/run.sh --bin PATH [run.py flags...]   any binary, the short form's
#                                    timing unless the flags say otherwise
#
# What it needs (PostgreSQL 15, python3-confluent-kafka, and compat/.venv
# with PyPI's confluent-kafka for the transactional scenarios) comes from
# scripts/setup.sh. The last line says how many scenarios passed and failed.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x "${PG_BIN:-/usr/lib/postgresql/15/bin}/initdb" ] || { echo "faults: no PostgreSQL 15; run scripts/setup.sh" >&2; exit 1; }
/usr/bin/python3 -c 'import confluent_kafka' 2>/dev/null \
  || { echo "faults: no python3-confluent-kafka; run scripts/setup.sh" >&2; exit 1; }
compat/.venv/bin/python -c 'import confluent_kafka' 2>/dev/null \
  || { echo "faults: no compat/.venv with confluent-kafka; run scripts/setup.sh" >&2; exit 1; }
/usr/bin/python3 -m unittest -q faults/test_checker.py faults/test_txn_checker.py

if [ "${1:-}" = "--long" ]; then
  shift
  cargo build -j1 --release -p pgbroker-cli
  # The summaries are kept beside the report they were made into.
  results=faults/results-long.jsonl
  new=$(mktemp)
  status=0
  /usr/bin/python3 faults/run.py --bin target/release/pgbroker --duration 90 --gap 2 6 --outage 1 8 \
    --rate 500 --results "$new" "$@" || status=$?
  /usr/bin/python3 faults/report.py "$results" "$status" "$new" > RELIABILITY.md
  rm -f "$new"
  echo "wrote RELIABILITY.md" >&2
  exit "$status"
fi

if [ "${1:-}" = "--bin" ]; then
  bin=$2
  shift 2
else
  cargo build -j1 -p pgbroker-cli
  bin=target/debug/pgbroker
fi
# Two Patroni scenarios (asynchronous replication, a whole node killed) run
# in the long form only: the short form keeps the synchronous ones, under
# stream and queue load, and stays within its time.
exec /usr/bin/python3 faults/run.py --bin "$bin" --duration 6 --gap 1 2.5 --outage 1 2.5 \
  --skip patroni-failover-async --skip patroni-node-kill "$@"
