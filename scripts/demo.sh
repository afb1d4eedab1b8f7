#!/usr/bin/env bash
# The main job on one machine: local Kafka broker, a worker, the order, pageview
# and transaction generators, and a live view of closed windows, sessions, fraud
# alerts, late events and dead letters.
# Runs for DEMO_SECONDS (default 120), then stops what it started. It starts from
# an empty broker of its own (.weir/demo), since its event time runs ahead of the clock.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
seconds=${DEMO_SECONDS:-120}
export WEIR_HOME=.weir/demo WEIR_DATA_DIR=.weir/demo/worker
# sessions end after 5 min of event time here (7.5 s of the demo's wall clock), not 30 min
export WEIR_SESSION_GAP_MS=${WEIR_SESSION_GAP_MS:-300000}
logs=.weir/demo/logs
weir broker wipe >/dev/null
rm -rf "$WEIR_DATA_DIR"
mkdir -p "$logs"

weir broker start
weir topics
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "${DEMO_KEEP_BROKER:-0}" = 1 ] || weir broker stop
}
trap cleanup EXIT INT TERM

weir worker -l info >"$logs/worker.log" 2>&1 &
pids+=($!)
echo "demo: worker started (log: $logs/worker.log, live dashboard: http://127.0.0.1:${WEIR_WEB_PORT:-6066}/dashboard)"
# Event time runs 40x faster than the wall clock, so a 60 s window closes every ~1.5 s.
# It starts in the past and reaches the present at the end (events ahead of the
# wall clock by more than WEIR_MAX_FUTURE_SKEW_MS would be dead letters).
start_ms=$(( $(date +%s) * 1000 - seconds * 40000 ))
weir generate orders --rate 2000 --step-ms 20 --count $((seconds * 2000)) --start-ms "$start_ms" \
  --disorder-ms 8000 --late-fraction 0.002 --malformed-fraction 0.0005 >"$logs/generator.log" 2>&1 &
pids+=($!)
weir generate pageviews --rate 1000 --step-ms 40 --count $((seconds * 1000)) --start-ms "$start_ms" \
  --disorder-ms 8000 --late-fraction 0.002 --malformed-fraction 0.0005 >"$logs/generator-pageviews.log" 2>&1 &
pids+=($!)
weir generate transactions --rate 500 --step-ms 80 --count $((seconds * 500)) --start-ms "$start_ms" \
  --disorder-ms 3000 --late-fraction 0.002 --malformed-fraction 0.0005 --fraud-fraction 0.01 \
  >"$logs/generator-transactions.log" 2>&1 &
pids+=($!)
echo "demo: generators started (log: $logs/generator.log); results for ${seconds}s:"
weir watch --max-seconds "$seconds"
