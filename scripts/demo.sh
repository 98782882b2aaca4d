#!/usr/bin/env bash
# Builds pgbroker and runs a short produce/consume session against the
# local PostgreSQL, in the schema `pgbroker_demo`.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-postgres.sh
cargo build --release --quiet -p pgbroker-cli
pb=./target/release/pgbroker
export PGBROKER_SCHEMA="${PGBROKER_SCHEMA:-pgbroker_demo}"

set -x
$pb migrate
$pb topic delete demo 2>/dev/null || true
$pb group delete demo-readers 2>/dev/null || true
$pb topic create demo --partitions 3 --retention 7d
printf 'alice:signed up\nbob:ordered two books\nalice:paid\n' | $pb produce demo --key-separator :
$pb consume demo --group demo-readers --from-beginning --max-messages 3 --format json
$pb group describe demo-readers
$pb topic describe demo
psql -h 127.0.0.1 -U postgres -c \
  "SELECT topic, partition, \"offset\", convert_from(key, 'UTF8') AS key, convert_from(value, 'UTF8') AS value
   FROM $PGBROKER_SCHEMA.messages ORDER BY partition, \"offset\""
