#!/usr/bin/env bash
# The per-event floor of a node none of whose clients wants the events (BENCHMARKS.md, the
# cluster's scale model): two `bak` nodes on one PostgreSQL database, records created through
# node B by `bakend-bench rest-create`, node A with no client at all. Prints the CPU time each
# node spent per event (utime + stime from /proc, minus what it spends idle over as long), so
# A's figure is what every other node of a cluster pays for an event its sockets do not want.
# Usage: DATABASE=postgres://user@host:port/db [BAKEND_CLUSTER_NATS=nats://…] \
#          scripts/bench-idle-node.sh [clients=32] [duration=10]
# Without BAKEND_CLUSTER_NATS the events reach A through the journal (`NOTIFY`, then a read).
# Both nodes and PostgreSQL on core 0, the load tool on core 1. BAK_BIN measures another build.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-32}
duration=${2:-10}
port=${PORT:-18100}
[[ -n "${DATABASE:-}" ]] || { echo "DATABASE=postgres://… is required" >&2; exit 2; }
[[ -n "${BAK_BIN:-}" ]] || cargo build --release -q -p bak -p bakend-bench
bin=${BAK_BIN:-$PWD/target/release/bak}
dir=$(mktemp -d /tmp/bakend-idle.XXXXXX)
a= b=
trap 'kill -INT $a $b 2>/dev/null || true; wait $a $b 2>/dev/null || true; rm -rf "$dir"; [[ -n "${pg_cleanup:-}" ]] && pg_bench_cleanup' EXIT
source scripts/pg-bench-lib.sh
pg_bench_from_env
mkdir -p "$dir/collections"
cat > "$dir/collections/bench.json" <<'JSON'
{"name":"bench","fields":[{"name":"title","type":"string","required":true},{"name":"n","type":"integer"}]}
JSON
token=idle-node-bench-metrics-token
echo '{"metrics":{"enabled":true,"token":"'$token'"}}' > "$dir/bakend.json"

start_node() { # port id → pid
  (cd "$dir" && BAKEND_CLUSTER_NODE_ID=$2 exec taskset -c 0 "$bin" start --port "$1" >"$dir/$2.out" 2>"$dir/$2.err") &
  echo $!
}
wait_up() {
  for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "node on port $1 did not start" >&2; exit 1
}
a=$(start_node "$port" a); wait_up "$port"
b=$(start_node "$((port + 1))" b); wait_up "$((port + 1))"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
events_in() {
  curl -fs -H "Authorization: Bearer $token" "http://127.0.0.1:$1/metrics" |
    awk '/^bakend_realtime_events_in_total/ {print $2}'
}
hz=$(getconf CLK_TCK)
sleep 2
# Idle: heartbeats, polls, timers.
a0=$(ticks "$a"); b0=$(ticks "$b")
sleep "$duration"
idle_a=$(( $(ticks "$a") - a0 )); idle_b=$(( $(ticks "$b") - b0 ))
# Loaded: writes through B.
a0=$(ticks "$a"); b0=$(ticks "$b"); e0=$(events_in "$port")
taskset -c 1 target/release/bakend-bench rest-create --url "http://127.0.0.1:$((port + 1))" \
  --collection bench --clients "$clients" --duration "$duration" --warmup 0
sleep 1 # the last events reach A
load_a=$(( $(ticks "$a") - a0 )); load_b=$(( $(ticks "$b") - b0 )); e1=$(events_in "$port")
events=$(( ${e1%.*} - ${e0%.*} ))
awk -v ia="$idle_a" -v ib="$idle_b" -v la="$load_a" -v lb="$load_b" -v n="$events" -v hz="$hz" 'BEGIN {
  printf "events that reached node A: %d\n", n
  printf "node A (no clients): %.1f µs CPU per event (%.2f s loaded, %.2f s idle)\n", (la - ia) / hz / n * 1e6, la / hz, ia / hz
  printf "node B (the writes): %.1f µs CPU per event (%.2f s loaded, %.2f s idle)\n", (lb - ib) / hz / n * 1e6, lb / hz, ib / hz
}'
