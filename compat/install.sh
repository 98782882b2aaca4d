#!/usr/bin/env bash
# Installs the Kafka clients the compatibility suite drives. Idempotent: work
# already done is skipped, so a second run takes about a second. Made for
# Debian 12 as root.
#
#   Debian packages: kcat, python3-confluent-kafka, python3-kafka
#                    (librdkafka 2.0.2), plus python3-venv and nodejs/npm
#                    if missing
#   compat/.venv:    PyPI confluent-kafka (bundles a recent librdkafka),
#                    kafka-python, aiokafka
#   compat/node:     kafkajs, from package-lock.json
set -euo pipefail
cd "$(dirname "$0")"

need_apt=()
command -v kcat >/dev/null || need_apt+=(kcat)
/usr/bin/python3 -c 'import confluent_kafka' 2>/dev/null || need_apt+=(python3-confluent-kafka)
/usr/bin/python3 -c 'import kafka' 2>/dev/null || need_apt+=(python3-kafka)
command -v npm >/dev/null || need_apt+=(nodejs npm)

apt_install() {
  echo "install.sh: apt-get install $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "$@"
}
if ((${#need_apt[@]})); then apt_install "${need_apt[@]}"; fi

if ! .venv/bin/python -c 'import confluent_kafka, kafka, aiokafka' 2>/dev/null; then
  echo "install.sh: creating compat/.venv" >&2
  rm -rf .venv
  # The venv comes from the default python3; Debian's needs python3-venv,
  # and only trying tells whether it is there.
  if ! python3 -m venv .venv 2>/dev/null; then
    rm -rf .venv
    apt_install python3-venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q --disable-pip-version-check confluent-kafka kafka-python aiokafka
fi

if [[ ! -f node/node_modules/kafkajs/package.json ]]; then
  echo "install.sh: npm ci in compat/node" >&2
  (cd node && npm ci --no-audit --no-fund --loglevel=error)
fi

# Everything the suite runs must be importable now; fail loudly otherwise.
kcat -V >/dev/null
/usr/bin/python3 -c 'import confluent_kafka, kafka'
.venv/bin/python -c 'import confluent_kafka, kafka, aiokafka'
node -e 'require("./node/node_modules/kafkajs")'
