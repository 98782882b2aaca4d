#!/usr/bin/env bash
# Installs everything the test suites need; nothing else installs anything.
# Idempotent: what is already there is skipped, so a second run takes about
# a second. Made for Debian 12 as root.
#
#   Debian:      PostgreSQL (the test database, and the throwaway clusters
#                of faults/), kcat and Debian's librdkafka (the SASL and TLS
#                tests, compat/), librdkafka-dev and pkg-config (the
#                comparison harness links librdkafka), python3-confluent-kafka
#                and python3-kafka (compat/, faults/), python3-venv, nodejs
#                and npm (compat/), chromium (the console's browser tests),
#                pgbouncer (the tests of pgbroker behind a pooler), patroni and
#                etcd-server (the Patroni failover scenarios of faults/)
#   rustup:      rustfmt and clippy
#   compat/.venv PyPI confluent-kafka (bundles a recent librdkafka),
#                kafka-python, aiokafka
#   compat/node  kafkajs, from package-lock.json
#   compat/console            playwright-core (drives Debian's chromium; no
#                             browser download)
#   compat/.venv-schemathesis schemathesis (the console's admin API)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

installed() { [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]; }

packages=(postgresql postgresql-15 postgresql-client kcat librdkafka-dev pkg-config
  python3-confluent-kafka python3-kafka python3-venv chromium pgbouncer patroni etcd-server)
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "setup: missing ${missing[*]}, and not root to install them" >&2
    exit 1
  fi
  echo "setup: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${missing[@]}"
fi

if command -v rustup >/dev/null; then
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

cd "$ROOT/compat"
if ! .venv/bin/python -c 'import confluent_kafka, kafka, aiokafka' 2>/dev/null; then
  echo "setup: creating compat/.venv" >&2
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check confluent-kafka kafka-python aiokafka
fi
if [[ ! -f node/node_modules/kafkajs/package.json ]]; then
  echo "setup: npm ci in compat/node" >&2
  (cd node && npm ci --no-audit --no-fund --loglevel=error)
fi

# The SQS clients: boto3 with moto_server as the reference (compat/.venv-sqs),
# the AWS SDK for JavaScript v3 (compat/sqs-node, newest release); the SQL
# drivers: psycopg 3 (compat/sql/.venv) and node-postgres (compat/sql/node).
if ! .venv-sqs/bin/python -c 'import boto3, moto, flask' 2>/dev/null; then
  echo "setup: creating compat/.venv-sqs" >&2
  rm -rf .venv-sqs
  python3 -m venv .venv-sqs
  .venv-sqs/bin/pip install -q --disable-pip-version-check boto3 'moto[server]'
fi
if [[ ! -f sqs-node/node_modules/@aws-sdk/client-sqs/package.json ]]; then
  echo "setup: npm install in compat/sqs-node" >&2
  (cd sqs-node && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi
# Celery with kombu's SQS transport (compat/.venv-celery); pycurl is built
# against libcurl when PyPI has no wheel for this platform.
if ! .venv-celery/bin/python -c 'import celery, kombu.transport.SQS, pycurl, boto3' 2>/dev/null; then
  echo "setup: creating compat/.venv-celery" >&2
  rm -rf .venv-celery
  python3 -m venv .venv-celery
  pip_celery=(.venv-celery/bin/pip install -q --disable-pip-version-check celery 'kombu[sqs]' pycurl boto3)
  if ! "${pip_celery[@]}"; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q libcurl4-openssl-dev libssl-dev python3-dev build-essential
    "${pip_celery[@]}"
  fi
fi
# Dramatiq with dramatiq-sqs's broker (compat/.venv-dramatiq).
if ! .venv-dramatiq/bin/python -c 'import dramatiq, dramatiq_sqs, boto3' 2>/dev/null; then
  echo "setup: creating compat/.venv-dramatiq" >&2
  rm -rf .venv-dramatiq
  python3 -m venv .venv-dramatiq
  .venv-dramatiq/bin/pip install -q --disable-pip-version-check dramatiq dramatiq-sqs boto3
fi
if ! sql/.venv/bin/python -c 'import psycopg' 2>/dev/null; then
  echo "setup: creating compat/sql/.venv" >&2
  rm -rf sql/.venv
  python3 -m venv sql/.venv
  sql/.venv/bin/pip install -q --disable-pip-version-check 'psycopg[binary]'
fi
if [[ ! -f sql/node/node_modules/pg/package.json ]]; then
  echo "setup: npm ci in compat/sql/node" >&2
  (cd sql/node && npm ci --no-audit --no-fund --loglevel=error)
fi

# The console: playwright-core drives Debian's chromium (it downloads no
# browser of its own); schemathesis tests the admin API.
if [[ ! -f console/node_modules/playwright-core/package.json ]]; then
  echo "setup: npm install in compat/console" >&2
  (cd console && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi
if ! .venv-schemathesis/bin/schemathesis --version >/dev/null 2>&1; then
  echo "setup: creating compat/.venv-schemathesis" >&2
  rm -rf .venv-schemathesis
  python3 -m venv .venv-schemathesis
  .venv-schemathesis/bin/pip install -q --disable-pip-version-check schemathesis
fi

# Everything the suites run must work now; fail loudly otherwise.
kcat -V >/dev/null
pgbouncer --version >/dev/null
/usr/bin/python3 -c 'import confluent_kafka, kafka'
.venv/bin/python -c 'import confluent_kafka, kafka, aiokafka'
node -e 'require("./node/node_modules/kafkajs")'
pkg-config --exists rdkafka
.venv-sqs/bin/python -c 'import boto3, moto, flask'
(cd sqs-node && node -e 'require("@aws-sdk/client-sqs")')
sql/.venv/bin/python -c 'import psycopg'
(cd sql/node && node -e 'require("pg")')
.venv-celery/bin/python -c 'import celery, kombu.transport.SQS, pycurl, boto3'
(cd console && node -e 'require("playwright-core")')
.venv-schemathesis/bin/schemathesis --version >/dev/null
chromium --version >/dev/null 2>&1
.venv-dramatiq/bin/python -c 'import dramatiq, dramatiq_sqs, boto3'
