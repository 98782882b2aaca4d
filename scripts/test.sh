#!/usr/bin/env bash
# Every check, in tiers, on a fresh machine or a used one: installs what the
# suites need (scripts/setup.sh), starts PostgreSQL if it is down, then
# format, lints, docs, the unit and integration tests, the Kafka client
# compatibility suite, the fault scenarios in their short form, and a build
# of the fuzz targets. The first step that fails ends the run with its
# status; the run ends with one summary line per suite.
set -euo pipefail
cd "$(dirname "$0")/.."

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/pgbroker-test.XXXXXX")
SUMMARY=()
step() { printf '\n==== %s\n' "$*"; }

step "setup"
./scripts/setup.sh
./scripts/ensure-postgres.sh

step "cargo fmt"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc"
# The binary `pgbroker` and the library `pgbroker` share a doc path, so the
# binaries are documented on their own, before the libraries.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --bins -p pgbroker-cli -p pgbroker-bench
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --lib

step "cargo test"
cargo test --workspace 2>&1 | tee "$LOGS/cargo-test.log"
SUMMARY+=("$(awk '/^test result:/ { p += $4; f += $6; i += $8 }
  END { printf "cargo test: %d passed, %d failed, %d ignored", p, f, i }' "$LOGS/cargo-test.log")")

# The compat and fault suites drive the binary `cargo test` built. Every
# cargo call below selects the whole workspace, so that all of them share
# one feature set and one build of the dependencies: a `-p` selection
# unifies features differently and builds them all again, doubling the
# disk the run needs.
BIN=${CARGO_TARGET_DIR:-target}/debug/pgbroker
[[ -x $BIN ]] || { echo "cargo test did not build $BIN" >&2; exit 1; }

step "compat: real Kafka clients against pgbroker serve"
PGBROKER_BIN=$PWD/$BIN compat/run.sh | tee "$LOGS/compat.log"
SUMMARY+=("$(grep '^compat:' "$LOGS/compat.log" | tail -n 1)")

step "compat: SQS clients (boto3 with moto, the JavaScript SDK, Celery, Dramatiq) and SQL drivers (psycopg, node-postgres)"
cargo test --workspace --test sqs_compat --test sqs_node_compat --test celery_compat --test dramatiq_compat \
  --test sql_compat \
  -- --ignored --test-threads=1 2>&1 | tee "$LOGS/compat-sqs-sql.log"
PGBROKER_BIN=$PWD/$BIN compat/sqs_auth_run.sh 2>&1 | tee "$LOGS/compat-sqs-auth.log"
SUMMARY+=("$(awk '/^test result:/ { p += $4; f += $6 }
  END { printf "compat (SQS, SQL): %d passed, %d failed", p, f }' "$LOGS/compat-sqs-sql.log")")
SUMMARY+=("compat (SQS authentication, boto3): 1 passed, 0 failed")

step "compat: the console in chromium (Playwright) and its admin API under schemathesis"
cargo test --workspace --test console_compat -- --ignored 2>&1 | tee "$LOGS/compat-console.log"
SUMMARY+=("$(awk '/^test result:/ { p += $4; f += $6 }
  END { printf "compat (console): %d passed, %d failed", p, f }' "$LOGS/compat-console.log")")

step "faults: every scenario, short form"
faults/run.sh --bin "$BIN" 2>&1 | tee "$LOGS/faults.log"
SUMMARY+=("$(grep '^faults:' "$LOGS/faults.log" | tail -n 1)")

step "fuzz targets: build"
./scripts/fuzz-build.sh
SUMMARY+=("fuzz: $(ls fuzz/fuzz_targets/*.rs | wc -l) targets built")

step "summary"
printf '%s\n' "${SUMMARY[@]}"
rm -rf "$LOGS"
