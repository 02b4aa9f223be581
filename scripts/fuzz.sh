#!/usr/bin/env bash
# Runs the libFuzzer targets (record decoding, KQL, EQL, ES|QL, regular expressions, rule TOML) for a bounded time in all:
# `scripts/fuzz.sh SECONDS`. Seeds: our fixtures and rules and, when present, Elastic's (../shared/testdata).
# Findings (crash, timeout, OOM) land in .build-fuzz/findings/ and fail the run; turn each into a regression test.
# Leak detection is off: Swift packs references into enum payload spare bits, which LeakSanitizer cannot
# see, so it reports one-time global allocations as leaks (seen here on static FieldPath tables).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=${2:-decode kql eql esql regex rule}
swift build --scratch-path .build-fuzz -c release --product audit-sentinel-fuzz \
  -Xswiftc -sanitize=fuzzer,address -Xswiftc -g -Xswiftc -DAUDIT_SENTINEL_FUZZ 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
binary=.build-fuzz/release/audit-sentinel-fuzz
[ -x "$binary" ] || { echo "fuzz: build failed" >&2; exit 1; }

# Seeds per target: decode ← our fixtures and Elastic's audit logs; kql ← the queries of our rules and of
# Elastic's; rule ← the rule files themselves.
shared=${AUDIT_SENTINEL_SHARED_TESTDATA:-../shared/testdata}
mkdir -p .build-fuzz/findings .build-fuzz/corpus-decode .build-fuzz/corpus-kql .build-fuzz/corpus-eql .build-fuzz/corpus-esql .build-fuzz/corpus-regex .build-fuzz/corpus-rule
cp Tests/AuditEventsTests/Fixtures/* .build-fuzz/corpus-decode/
if [ -d "$shared/elastic-integrations-audit-logs" ]; then
  i=0
  while IFS= read -r line; do i=$((i+1)); printf '%s' "$line" > ".build-fuzz/corpus-decode/elastic-$i.json"; done \
    < <(cat "$shared"/elastic-integrations-audit-logs/*.log "$shared"/elastic-integrations-audit-logs/unpaired-*/*.log 2>/dev/null; echo)
fi
rules=(Config/rules/*.toml)
[ -d "$shared/elastic-detection-rules-kubernetes" ] && rules+=("$shared"/elastic-detection-rules-kubernetes/*.toml)
i=0
for rule in "${rules[@]}"; do
  i=$((i+1))
  cp "$rule" ".build-fuzz/corpus-rule/rule-$i.toml"
  .venv/bin/python -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb")).get("rule", {}).get("query", ""), end="")' "$rule" \
    > ".build-fuzz/corpus-kql/query-$i.kql" 2>/dev/null || true
done
# EQL seeds: the rules' queries (Elastic's EQL rules among them) and two of our own with every construct.
cp .build-fuzz/corpus-kql/* .build-fuzz/corpus-eql/ 2>/dev/null || true
printf '%s' 'sequence by user.name with maxspan=5m [any where a == "x" and b in~ ("y", "z")] by c [process where startsWith~(d, "e") and f like ("g*", "h?")] with runs=2 until [any where not i : "J*"]' > .build-fuzz/corpus-eql/own-1.eql
printf '%s' 'any where `a.b/c` != null and length(x) + 2 * -3 >= 1.5e3 /* c */ and y regex~ """raw\d+""" and z not in (1, 2)' > .build-fuzz/corpus-eql/own-2.eql
# ES|QL seeds: the rules' queries (Elastic's ES|QL rules among them) and one of our own with every command.
cp .build-fuzz/corpus-kql/* .build-fuzz/corpus-esql/ 2>/dev/null || true
printf '%s' 'from logs-* metadata _id | where a == "x" and b not in (1, 2.5) and c rlike """.*d.*""" and e is not null | eval f = url_decode(g), h = -i * 2 | grok f "%{DATA:j}" | dissect f "%{k} %{l}" append_separator = "-" | stats m = count(*), n = values(o) by p | where m >= 3 and q >= now() - 9 minutes | rename p as r | sort m desc nulls first | limit 5 | keep r, E.* | drop `s t`' > .build-fuzz/corpus-esql/own-1.esql
# Regular-expression seeds: a pattern, a newline, a text to match.
printf '%s\n%s' '(a*)*b' 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' > .build-fuzz/corpus-regex/nested.txt
printf '%s\n%s' '/api/v1/namespaces/[^/]+/pods/[^/]+/exec.*' '/api/v1/namespaces/x/pods/p/exec?command=sh' > .build-fuzz/corpus-regex/uri.txt
printf '%s\n%s' '"q.t"[\d\s\W]{1,3}(x|y|É)+' 'q.t1 éÉx' > .build-fuzz/corpus-regex/classes.txt
# The same target runs each pattern as Java's and Grok's syntax too: captures, lazy quantifiers, intersections.
printf '%s\n%s' '%{DATA}/exec\?%{DATA:raw}&(?:container|stdin)=%{GREEDYDATA}' '/api/v1/pods/p/exec?command=id&stdin=true' > .build-fuzz/corpus-regex/grok.txt
printf '%s\n%s' '(?<user>\w+?)@(\d{1,3}\.)+\b$' 'alice@10.0.0.1' > .build-fuzz/corpus-regex/java.txt
printf '%s\n%s' '.*(nc|bash -i >&|0>&1).*&.*\s.*' 'bash -i >& /dev/tcp/x 0>&1' > .build-fuzz/corpus-regex/intersection.txt

# The time is split: two sevenths to decoding (the attack surface of every record), a seventh to each other target.
status=0
for target in $targets; do
  case $target in decode) budget=$((seconds * 2 / 7)) ;; *) budget=$((seconds / 7)) ;; esac
  [ "$budget" -ge 1 ] || budget=1
  corpus=.build-fuzz/corpus-$target
  echo "fuzz: $target target for ${budget}s, seeds: $(ls "$corpus" | wc -l) files"
  set +e
  AUDIT_SENTINEL_FUZZ_TARGET=$target ASAN_OPTIONS=detect_leaks=0 "$binary" -max_total_time="$budget" -max_len=65536 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix=".build-fuzz/findings/$target-" -print_final_stats=1 "$corpus" > ".build-fuzz/last-run-$target.log" 2>&1
  run=$?
  set -e
  grep -E '^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==ERROR|SUMMARY|Test unit written)' ".build-fuzz/last-run-$target.log" \
    | sed "s/^/  $target: /" || true
  [ "$run" -eq 0 ] || status=$run
done
if [ "$status" -ne 0 ] || ls .build-fuzz/findings/ | grep -q .; then
  echo "fuzz: FINDINGS in .build-fuzz/findings/ (exit $status)" >&2
  exit 1
fi
echo "fuzz: clean"
