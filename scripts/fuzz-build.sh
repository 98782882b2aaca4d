#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, outside the workspace) the way cargo-fuzz
# does, with libFuzzer's coverage instrumentation, but without cargo-fuzz
# and without AddressSanitizer, on the stable toolchain (RUSTC_BOOTSTRAP
# allows the flags nightly would). The binaries land in
# fuzz/target/x86_64-unknown-linux-gnu/debug/ and run as libFuzzer binaries:
#
#   fuzz/target/x86_64-unknown-linux-gnu/debug/request fuzz/corpus/request -max_total_time=60
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  --cfg fuzzing
)
# An explicit target keeps the flags off build scripts and proc macros.
RUSTC_BOOTSTRAP=1 RUSTFLAGS="${flags[*]}" CARGO_TARGET_DIR=target \
  cargo build --locked --bins --target x86_64-unknown-linux-gnu
