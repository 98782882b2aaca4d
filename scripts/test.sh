#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one: starts PostgreSQL
# if it is down, installs what the tests need, then runs fmt, clippy and
# every test against the real database.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-postgres.sh

# kcat (librdkafka) is the real Kafka client of the SASL end-to-end test.
if ! command -v kcat >/dev/null 2>&1; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q kcat
fi

# The comparison harness (crates/pgbroker-bench) links Debian's librdkafka.
if ! dpkg -s librdkafka-dev pkg-config >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq librdkafka-dev pkg-config
fi

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
