#!/usr/bin/env bash
# The crash test: `scripts/chaos.sh KILLS [EVENTS]` (make test runs a short form, make chaos a long one).
# Three `audit-sentinel run` instances in one group on tansu read a 6-partition input fed a seeded stream
# (keyed by account, so each account's events keep their order), with two rules: the shipped one and an EQL
# sequence rule of ours (Tests/Fixtures/rules), whose pending sequences must survive the kills;
# instances are killed with SIGKILL at random moments and restarted until KILLS kills have happened and
# the input is drained. The expected alerts come from `audit-sentinel replay` on the same events (the same
# pipeline code, no Kafka; every record produced with its event's time as the Kafka timestamp). The
# verifier (scripts/chaos.py) then requires every expected alert id, each one's last version equal to the
# expected final document, and no unexpected id; it reports redelivered duplicates. Bounded: it stops
# by itself (a drain deadline) and stops every process it started.
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-3}
events=${2:-3000}
seed=${CHAOS_SEED:-$RANDOM}
# The stream spans a few seconds of event time, less than a window (10 s, grace 2 s, for run and replay
# alike): windows close by the idle timeout once the input is drained (replay closes them at the end of its
# input), and none closes before.
idle=20
work=.build-logs/chaos
rm -rf "$work" && mkdir -p "$work"
binary=.build/debug/audit-sentinel
[ -x "$binary" ] || swift build --product audit-sentinel >/dev/null
python=.venv/bin/python
export LD_LIBRARY_PATH="$PWD/.build-librdkafka${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"  # librdkafka that talks to tansu

. scripts/tansu.sh
start_tansu "$work/tansu.log"
bootstrap="127.0.0.1:$TANSU_PORT"
app="chaos-$seed"
input="chaos-audit"
alerts="chaos-alerts"
rules="$work/rules"
mkdir -p "$rules"
cp Config/rules/*.toml Tests/Fixtures/rules/sequence_role_change_then_secret_access.toml "$rules/"
matches_topics=()
for id in $(sed -n 's/^rule_id = "\(.*\)"/\1/p' "$rules"/*.toml); do matches_topics+=("$app-$id-matches"); done

"$binary" generate --count "$events" --denied-fraction 0.05 --seed "$seed" --output "$work/events.ndjson"
"$python" scripts/chaos.py produce "$bootstrap" "$input" "$work/events.ndjson" "$work/replay.ndjson"
"$binary" replay --rules "$rules" --grace 2 --suppression-duration 10s "$work/replay.ndjson" > "$work/expected.ndjson" 2> "$work/replay.log"
# The stream must hold sequences for the kills to cut through (shells are the alerts at depth 2).
sequences=$(grep -c '"depth":2' "$work/expected.ndjson" || true)
[ "$sequences" -gt 0 ] || { echo "chaos: the stream completes no EQL sequence; the test would prove nothing about them" >&2; exit 1; }

declare -a pids=(0 0 0)
start_instance() {  # $1 = slot
  "$binary" run --brokers "$bootstrap" --input "$input" --alerts-topic "$alerts" --application-id "$app" --rules "$rules" \
    --http-listen "127.0.0.1:0" --log-format json --log-level notice \
    --set "processing.idle_timeout=${idle}s" --set processing.grace=2s --set suppression.duration=10s \
    --set processing.replication_factor=1 --set processing.max_batch=200 \
    --set kafka.consumer.session.timeout.ms=6000 --set kafka.consumer.heartbeat.interval.ms=500 \
    --set kafka.consumer.fetch.wait.max.ms=50 --set kafka.common.topic.metadata.refresh.interval.ms=1000 \
    >>"$work/instance-$1.log" 2>&1 &
  pids[$1]=$!
}
stop_all() {
  for slot in 0 1 2; do [ "${pids[$slot]}" -gt 0 ] && kill -TERM "${pids[$slot]}" 2>/dev/null || true; done
  for slot in 0 1 2; do [ "${pids[$slot]}" -gt 0 ] && wait "${pids[$slot]}" 2>/dev/null || true; done
}
trap 'stop_all; stop_tansu' EXIT

for slot in 0 1 2; do start_instance "$slot"; done
done_kills=0
deadline=$((SECONDS + 120 + kills * 15))
while [ "$SECONDS" -lt "$deadline" ]; do
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.1f", 1 + (r % 40) / 10 }')"
  if [ "$done_kills" -lt "$kills" ]; then
    slot=$((RANDOM % 3))
    kill -KILL "${pids[$slot]}" 2>/dev/null || true
    wait "${pids[$slot]}" 2>/dev/null || true
    done_kills=$((done_kills + 1))
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.1f", (r % 20) / 10 }')"
    start_instance "$slot"
    continue
  fi
  if "$python" scripts/chaos.py drained "$bootstrap" "$app" "$input" "${matches_topics[@]}" > "$work/drained.log" 2>&1; then
    break
  fi
done
"$python" scripts/chaos.py drained "$bootstrap" "$app" "$input" "${matches_topics[@]}" || { echo "chaos: input not drained in time" >&2; exit 1; }
# Quiet partitions close their windows after the idle timeout, counted from the last restore: after the
# last kill the group first waits out the dead member's session (6 s), then restores, then idles. Verify
# until the alerts match or that has had ample time (the final verdict below is the one that counts).
settle_deadline=$((SECONDS + idle + 60))
sleep $((idle + 8))
while [ "$SECONDS" -lt "$settle_deadline" ] && ! "$python" scripts/chaos.py verify "$bootstrap" "$alerts" "$work/expected.ndjson" > "$work/settle.log" 2>&1; do
  sleep 5
done
stop_all
pids=(0 0 0)
echo "chaos: seed $seed, $events events, $done_kills kills (SIGKILL) survived; expected: $(tail -n 1 "$work/replay.log"), $sequences of them EQL sequences"
"$python" scripts/chaos.py verify "$bootstrap" "$alerts" "$work/expected.ndjson"
