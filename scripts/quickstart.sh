#!/usr/bin/env bash
# A working broker on a fresh Debian or Ubuntu machine, in one command:
# installs PostgreSQL's server when none is installed (apt-get), a Rust
# toolchain when there is none (rustup), builds pgbroker (release), then
# runs `pgbroker serve --embedded`: its own PostgreSQL cluster, with the
# Kafka (topics created on first use), HTTP (the console) and SQS listeners
# on loopback. Ctrl-C stops the broker, then
# the cluster.
#
#   ./scripts/quickstart.sh [DIR]    DIR: the cluster's directory (default:
#                                    /var/lib/pgbroker as root,
#                                    ~/.local/share/pgbroker otherwise)
#
# Environment: KAFKA_LISTEN (127.0.0.1:9092), HTTP_LISTEN (127.0.0.1:8080),
# SQS_LISTEN (127.0.0.1:9324); PGBROKER_BIN runs that binary instead of
# building one.
set -euo pipefail
cd "$(dirname "$0")/.."

KAFKA_LISTEN=${KAFKA_LISTEN:-127.0.0.1:9092}
HTTP_LISTEN=${HTTP_LISTEN:-127.0.0.1:8080}
SQS_LISTEN=${SQS_LISTEN:-127.0.0.1:9324}
say() { printf 'quickstart: %s\n' "$*" >&2; }

as_root() {
  if [[ $(id -u) == 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    say "needs root to run: $*"
    exit 1
  fi
}

apt_install() {
  say "installing $* (apt-get)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

have_server() {
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null
}
have_server || apt_install postgresql

if [[ -n ${PGBROKER_BIN:-} ]]; then
  bin=$PGBROKER_BIN
else
  [[ -x $HOME/.cargo/bin/cargo ]] && PATH=$HOME/.cargo/bin:$PATH
  if ! command -v cargo >/dev/null; then
    command -v curl >/dev/null && command -v cc >/dev/null || apt_install curl ca-certificates build-essential
    say "no Rust toolchain: installing one for $(id -un) with rustup (~/.cargo)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    PATH=$HOME/.cargo/bin:$PATH
  fi
  command -v cc >/dev/null || apt_install build-essential
  say "building pgbroker (release): a few minutes the first time, seconds after"
  # Cargo draws its progress bar on a terminal and lists each crate otherwise.
  cargo build --release -p pgbroker-cli --bin pgbroker
  bin=target/release/pgbroker
fi

say "starting pgbroker serve --embedded ${1:-}"
say "  Kafka: $KAFKA_LISTEN         kcat -b $KAFKA_LISTEN -L (topics are created on first use)"
say "  HTTP:  http://$HTTP_LISTEN   the console at /console/, /healthz, /metrics"
say "  SQS:   http://$SQS_LISTEN   aws --endpoint-url http://$SQS_LISTEN sqs list-queues (unsigned requests accepted from loopback)"
say "  the embedded PostgreSQL and how to reach it with psql: printed below once it runs"
exec "$bin" serve --embedded ${1:+"$1"} \
  --kafka-listen "$KAFKA_LISTEN" --http-listen "$HTTP_LISTEN" \
  --sqs-listen "$SQS_LISTEN" --sqs-allow-anonymous --auto-create-topics
