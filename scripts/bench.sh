#!/usr/bin/env bash
# `make bench`: the benchmarks (release build). Two runs, each with the librdkafka its broker needs:
#   1. everything on the mock cluster, with Debian's librdkafka (.bench/results.json);
#   2. end to end and latency on a tansu broker started here, with the librdkafka of the confluent-kafka
#      wheel (Debian's 2.0.2 cannot talk to tansu) (.bench/results-tansu.json).
# Arguments, if any, name the suites of run 1 (decode detect core memory e2e latency scale).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bench .build-logs
swift build -c release --product audit-sentinel-bench 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] ' || true
BENCH_BROKERS=mock ./.build/release/audit-sentinel-bench "$@" | tee .bench/results.txt
. scripts/tansu.sh
start_tansu .build-logs/tansu-bench.log
LD_LIBRARY_PATH="$PWD/.build-librdkafka${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
BENCH_TANSU_BOOTSTRAP="127.0.0.1:$TANSU_PORT" BENCH_BROKERS=tansu BENCH_OUTPUT=.bench/results-tansu.json \
  ./.build/release/audit-sentinel-bench e2e latency | tee -a .bench/results.txt
