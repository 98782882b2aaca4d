#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers at 127.0.0.1:5432 and that the
# `test` database exists, starting the server when it is down. PostgreSQL
# itself comes from scripts/setup.sh.
set -euo pipefail

for tool in psql pg_ctlcluster; do
  command -v "$tool" >/dev/null 2>&1 || { echo "no $tool: run scripts/setup.sh" >&2; exit 1; }
done

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "starting PostgreSQL $version" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
fi
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
