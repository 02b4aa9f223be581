#!/usr/bin/env bash
# Where the end-to-end run's time goes: a system-wide CPU profile (perf record -a) of `make bench`'s e2e
# suite on the mock cluster and on tansu, cut to each measured interval (the raw librdkafka consumer, the
# pipeline), and split by thread and library: the pipeline's own thread (our code, librdkafka's calls on it,
# the kernel), librdkafka's threads, the broker, and idle cores. Writes .bench/profile-e2e.txt.
# BENCH_E2E_EVENTS sets the tansu run's events (default 200 000; the mock's are 80 000 on 24 partitions); one round each
# (BENCH_E2E_ROUNDS) unless told otherwise. `make bench` runs it last when perf is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bench .build-logs
command -v perf >/dev/null || { echo "profile-e2e needs perf (linux-perf)" >&2; exit 1; }
. scripts/release-build.sh
release_build audit-sentinel-bench
bench=$RELEASE_BIN/audit-sentinel-bench
out=.bench/profile-e2e.txt
: > "$out"

profile() {  # name, then the environment and command of the run
  local name=$1
  shift
  env BENCH_PHASES=1 BENCH_E2E_ROUNDS="${BENCH_E2E_ROUNDS:-1}" BENCH_OUTPUT=".bench/profile-$name.json" perf record -a -k monotonic -F 1999 -o ".bench/profile-$name.perf" \
    -- "$@" e2e > ".bench/profile-$name.log" 2> ".build-logs/profile-$name.err"
  grep -E '^\| e2e' ".bench/profile-$name.log" | tee -a "$out"
  python3 scripts/profile-e2e-summary.py ".bench/profile-$name.perf" < ".bench/profile-$name.log" | tee -a "$out"
}

profile mock env BENCH_BROKERS=mock "$bench"
. scripts/tansu.sh
start_tansu .build-logs/tansu-profile.log
profile tansu env LD_LIBRARY_PATH="$PWD/.build-librdkafka${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  BENCH_TANSU_BOOTSTRAP="127.0.0.1:$TANSU_PORT" BENCH_BROKERS=tansu BENCH_E2E_EVENTS="${BENCH_E2E_EVENTS:-200000}" "$bench"
