#!/usr/bin/env bash
# Runs the libFuzzer target over record decoding for a bounded time: `scripts/fuzz.sh SECONDS`.
# Seeds: our fixtures and, when present, Elastic's (../shared/testdata). Findings (crash, timeout, OOM)
# land in .build-fuzz/findings/ and fail the run; turn each into a regression test.
# Leak detection is off: Swift packs references into enum payload spare bits, which LeakSanitizer cannot
# see, so it reports one-time global allocations as leaks (seen here on static FieldPath tables).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
swift build --scratch-path .build-fuzz -c release --product audit-sentinel-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -g -Xswiftc -DAUDIT_SENTINEL_FUZZ 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
binary=.build-fuzz/release/audit-sentinel-fuzz
[ -x "$binary" ] || { echo "fuzz: build failed" >&2; exit 1; }

corpus=.build-fuzz/corpus
mkdir -p "$corpus" .build-fuzz/findings
cp Tests/AuditEventsTests/Fixtures/* "$corpus"/
shared=${AUDIT_SENTINEL_SHARED_TESTDATA:-../shared/testdata}/elastic-integrations-audit-logs
if [ -d "$shared" ]; then
  i=0
  while IFS= read -r line; do i=$((i+1)); printf '%s' "$line" > "$corpus/elastic-$i.json"; done \
    < <(cat "$shared"/*.log "$shared"/unpaired-*/*.log 2>/dev/null; echo)
fi

echo "fuzz: decoding target for ${seconds}s, seeds: $(ls "$corpus" | wc -l) files"
set +e
ASAN_OPTIONS=detect_leaks=0 "$binary" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix=.build-fuzz/findings/ -print_final_stats=1 "$corpus" > .build-fuzz/last-run.log 2>&1
status=$?
set -e
grep -E '^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)' .build-fuzz/last-run.log || true
if [ "$status" -ne 0 ] || ls .build-fuzz/findings/ | grep -q .; then
  echo "fuzz: FINDINGS in .build-fuzz/findings/ (exit $status)" >&2
  exit 1
fi
echo "fuzz: clean"
