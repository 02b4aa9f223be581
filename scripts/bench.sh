#!/usr/bin/env bash
# `make bench`: the benchmarks (release build) on the mock cluster and on a tansu broker started here.
# librdkafka is the one bundled in the confluent-kafka wheel for the whole run (Debian's 2.0.2 cannot talk
# to tansu), so both brokers are measured with the same client library.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bench .build-logs
swift build -c release --product audit-sentinel-bench 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
. scripts/tansu.sh
start_tansu .build-logs/tansu-bench.log
LD_LIBRARY_PATH="$PWD/.build-librdkafka${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
BENCH_TANSU_BOOTSTRAP="127.0.0.1:$TANSU_PORT" \
  ./.build/release/audit-sentinel-bench "$@" | tee .bench/results.txt
