#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one: starts PostgreSQL
# if it is down, installs what the tests need, then runs fmt, clippy and
# every test against the real database.
set -euo pipefail
cd "$(dirname "$0")/.."

PGHOST_ADDR=127.0.0.1
PGPORT_NUM=5432

need_apt=()
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}"
fi

if ! pg_isready -q -h "$PGHOST_ADDR" -p "$PGPORT_NUM"; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do
    pg_isready -q -h "$PGHOST_ADDR" -p "$PGPORT_NUM" && break
    sleep 1
  done
fi
psql -h "$PGHOST_ADDR" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
  || psql -h "$PGHOST_ADDR" -U postgres -d postgres -c "CREATE DATABASE test"

if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
