#!/usr/bin/env bash
# `make bench`: the benchmarks (release build), in four runs (the first two each with the librdkafka its broker needs):
#   1. everything on the mock cluster, with Debian's librdkafka (.bench/results.json);
#   2. end to end and latency on a tansu broker started here, with the librdkafka of the confluent-kafka
#      wheel (Debian's 2.0.2 cannot talk to tansu) (.bench/results-tansu.json); end to end over 200 000
#      events (BENCH_TANSU_E2E_EVENTS): runs of 20 000 last ~0.1 s and measure start-up more than
#      throughput (the mock keeps only 5 MB a partition: it runs 80 000 on 24 partitions, BENCH_E2E_PARTITIONS);
#   3. instructions per event of the core (valgrind's callgrind, counted inside the core's pass only) at
#      0.1 / 1 / 10 % matches: repeatable where timings on this machine are not;
#   3b. instructions per record of the pipeline's own thread in a live run on the mock (callgrind,
#      --separate-threads; scripts/callgrind-thread.py): the core's work plus the loop's, librdkafka's calls
#      on that thread and the sink;
#   4. `replay` throughput (median of three runs, file in the page cache) on a generated log of
#      BENCH_REPLAY_EVENTS events (default 160 000, ~200 MB), and
#      its peak memory on one of BENCH_REPLAY_LARGE_EVENTS (default 800 000, ~1 GB);
#   5. where the end-to-end runs' CPU goes (scripts/profile-e2e.sh, when perf is installed):
#      .bench/profile-e2e.txt.
# BENCH_E2E_MATCH_RATE (default 0.01) sets the share of matches in the end-to-end runs and 3b;
# BENCH_PIPELINE_CONSUMER=name=value,… adds librdkafka settings to the pipeline's consumer alone.
# Arguments, if any, name the suites of run 1 (decode detect core memory e2e latency scale); BENCH_EXTRA=0
# skips runs 3–4.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .bench .build-logs
# The instruction counts and the replay's peak memory need valgrind and GNU time; linking the Swift
# libraries statically, libcurl's headers and library (Foundation's networking part, which FlyingFox
# imports, links against it).
if ! command -v valgrind >/dev/null || [ ! -x /usr/bin/time ] || ! ls /usr/lib/*/libcurl.so /usr/lib/libcurl.so >/dev/null 2>&1; then
  SUDO=""; if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO=sudo; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind time libcurl4-openssl-dev >/dev/null
fi
# Built as the container image builds the binary it ships (Dockerfile): the Swift runtime and Foundation
# linked statically (a replay took 0.86 of the dynamically linked binary's time, paired runs), in a build
# directory of its own so that `make test`'s release build is not redone with other flags.
. scripts/release-build.sh
release_build audit-sentinel-bench
release_build audit-sentinel
BENCH_BROKERS=mock "$RELEASE_BIN/audit-sentinel-bench" "$@" | tee .bench/results.txt
. scripts/tansu.sh
start_tansu .build-logs/tansu-bench.log
LD_LIBRARY_PATH="$PWD/.build-librdkafka${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
BENCH_TANSU_BOOTSTRAP="127.0.0.1:$TANSU_PORT" BENCH_BROKERS=tansu BENCH_OUTPUT=.bench/results-tansu.json \
  BENCH_E2E_EVENTS=${BENCH_TANSU_E2E_EVENTS:-200000} "$RELEASE_BIN/audit-sentinel-bench" e2e latency | tee -a .bench/results.txt
[ "${BENCH_EXTRA:-1}" = 1 ] || exit 0

echo "== instructions per event, core (callgrind; every record validated)" | tee -a .bench/results.txt
# Valgrind cannot read the Swift toolchain's DWARF: a copy without debug info (symbols kept). Two passes,
# of N and 2N events, and their difference over N: what is counted once (rule loading, first-use tables)
# drops out.
objcopy --strip-debug "$RELEASE_BIN/audit-sentinel-bench" .bench/audit-sentinel-bench-nodebug
n=${BENCH_CALLGRIND_EVENTS:-4000}
for rate in 0.001 0.01 0.1; do
  counts=()
  for events in "$n" $((2 * n)); do
    out=.bench/callgrind-$rate-$events.out
    BENCH_EVENTS=$events BENCH_MATCH_RATE=$rate valgrind --tool=callgrind --callgrind-out-file="$out" \
      --toggle-collect='*measuredPass*' .bench/audit-sentinel-bench-nodebug core-once > "${out%.out}.log" 2>&1
    counts+=("$(awk '/^summary:/ { print $2 }' "$out")")
  done
  printf '| core (callgrind) | %s %% matches | %d instructions/event |\n' \
    "$(awk -v r="$rate" 'BEGIN { print r * 100 }')" $(((counts[1] - counts[0]) / n)) | tee -a .bench/results.txt
done

echo "== instructions per record on the pipeline's own thread, live on the mock (callgrind)" | tee -a .bench/results.txt
# One pipeline round, every record validated, over N and 2N fresh events (1 % matches, BENCH_E2E_MATCH_RATE), each thread
# counted apart (--separate-threads): the thread that ran the stream task, its difference over N. Set
# beside the core's count above, it says how many more instructions the live loop executes a record than
# the core does; set beside the loop's CPU per record in the e2e note, how fast it executes them.
n=${BENCH_CALLGRIND_PIPELINE_EVENTS:-4000}
for events in "$n" $((2 * n)); do
  rm -f .bench/callgrind-pipeline-"$events"*
  BENCH_EVENTS=$events valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=.bench/callgrind-pipeline-"$events" \
    .bench/audit-sentinel-bench-nodebug pipeline-once > .bench/callgrind-pipeline-"$events".log 2>&1
done
printf '| pipeline thread (callgrind) | %s |\n' \
  "$(python3 scripts/callgrind-thread.py "$n" .bench/callgrind-pipeline-"$n" .bench/callgrind-pipeline-$((2 * n)))" | tee -a .bench/results.txt

echo "== replay of generated logs" | tee -a .bench/results.txt
# Throughput on ~200 MB, and peak memory on ~1 GB (BENCH_REPLAY_LARGE_EVENTS, 0 skips it): streaming input
# keeps it flat whatever the file's size.
replay_run() {  # events, log file
  local events=$1 log=$2
  [ -s "$log" ] && [ "$(wc -l < "$log")" -eq "$events" ] || \
    "$RELEASE_BIN/audit-sentinel" generate --count "$events" --denied-fraction 0.01 --output "$log" > /dev/null
  local bytes runs=() peak_kb=0 cpu=() seconds user sys kb
  bytes=$(stat -c %s "$log")
  # The file is read once first: the figure is replay's, not the disk's (a just-generated file may still be
  # being written back). Three runs, their median wall time; peak memory is the largest of the three.
  cat "$log" > /dev/null
  for _ in 1 2 3; do
    /usr/bin/time -f '%e %U %S %M' -o .bench/replay-time.txt "$RELEASE_BIN/audit-sentinel" replay "$log" > .bench/replay-alerts.ndjson || true
    read -r seconds user sys kb < .bench/replay-time.txt
    runs+=("$seconds"); cpu+=("$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')")
    [ "$kb" -gt "$peak_kb" ] && peak_kb=$kb
  done
  seconds=$(printf '%s\n' "${runs[@]}" | sort -n | sed -n 2p)
  printf '| replay | %d events, %d MB, 1 %% denials, median of 3 (runs %s s; CPU %s s) | %.0f MB/s, %d alerts and updates, peak RSS %d MB |\n' \
    "$events" $((bytes / 1000000)) "${runs[*]}" "${cpu[*]}" \
    "$(awk -v b="$bytes" -v s="$seconds" 'BEGIN { print b / s / 1e6 }')" "$(wc -l < .bench/replay-alerts.ndjson)" $((peak_kb / 1024)) \
    | tee -a .bench/results.txt
}
replay_run "${BENCH_REPLAY_EVENTS:-160000}" .bench/replay-input.ndjson
large=${BENCH_REPLAY_LARGE_EVENTS:-800000}
if [ "$large" -gt 0 ]; then
  replay_run "$large" .bench/replay-input-large.ndjson
  rm -f .bench/replay-input-large.ndjson
fi

if command -v perf >/dev/null; then
  echo "== end to end, CPU by thread and library (perf record -a; .bench/profile-e2e.txt)" | tee -a .bench/results.txt
  stop_tansu
  bash scripts/profile-e2e.sh | tee -a .bench/results.txt
fi
