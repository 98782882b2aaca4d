#!/usr/bin/env bash
# The comparison, end to end: builds pgbroker and the harness in release
# mode, runs every scenario (systems in turn, ROUNDS rounds of DURATION
# each), the latency-against-rate sweep, and regenerates BENCHMARKS.md and
# docs/bench/*.svg from the results. Takes about an hour with the defaults.
# SOAK=30m adds a soak run (queue workload, a transaction held open for
# five minutes from minute 10). Peers that do not answer are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
out=results/$(date -u +%Y%m%dT%H%M%SZ).jsonl

cargo build --release -p pgbroker-cli -p pgbroker-bench
bench=target/release/pgbroker-bench
export PGBROKER_BIN=${PGBROKER_BIN:-target/release/pgbroker}

"$bench" suite --rounds "$ROUNDS" --duration "$DURATION" --out "$out"
"$bench" sweep --rates 1000,5000,20000,50000,max --systems pgbroker,article --duration "$DURATION" --out "$out"
if [ -n "${SOAK:-}" ]; then
  "$bench" soak --duration "$SOAK" --hold-transaction-at 10m --hold-transaction-for 5m --out "$out"
fi
"$bench" report --from "$out" --out BENCHMARKS.md --plots docs/bench
