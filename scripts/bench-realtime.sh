#!/usr/bin/env bash
# Realtime scenarios the way BENCHMARKS.md reports them: release build, server pinned to core 0,
# load tool pinned to core 1, a fresh project in a temp dir per scenario.
# Usage: scripts/bench-realtime.sh SCENARIO [bakend-bench flags…]
#   e.g. scripts/bench-realtime.sh fanout --subscribers 1000 --rate 100 --duration 10
#        scripts/bench-realtime.sh idle --connections 19000 --subscribe bench.created
#        scripts/bench-realtime.sh filtered-fanout --distinct 10000 --shared 1000 --rate 200
# DATABASE=postgres://user@host:port/db runs `bak` on PostgreSQL, in a fresh database created
#   (and dropped afterwards) on that server, PostgreSQL pinned to core 0 beside `bak`.
# SECOND_SERVER=1 (with DATABASE) starts a second `bak` on the same database (port + 1, also on
#   core 0) and has `fanout` create the records through it while subscribers stay on the
#   first: delivery across servers. With BAKEND_CLUSTER_NATS=nats://… (exported, so both servers
#   get it) events travel between them over NATS (docs/cluster.md) instead of being read from
#   the journal. NODES=N starts N servers in all; SPREAD=1 spreads the subscribers over them.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=$1
shift
port=${PORT:-18090}

[[ -n "${BAK_BIN:-}" ]] || cargo build --release -q -p bak -p bakend-bench
dir=$(mktemp -d /tmp/bakend-rt.XXXXXX)
second=
trap 'kill -INT $server $second 2>/dev/null || true; wait $server $second 2>/dev/null || true; rm -rf "$dir"; [[ -n "${pg_cleanup:-}" ]] && pg_bench_cleanup' EXIT
source scripts/pg-bench-lib.sh
pg_bench_from_env
mkdir -p "$dir/collections"
cat > "$dir/collections/bench.json" <<'JSON'
{"name":"bench","fields":[{"name":"title","type":"string"},{"name":"n","type":"integer"}]}
JSON
cat > "$dir/collections/bench_owned.json" <<'JSON'
{"name":"bench_owned","fields":[{"name":"title","type":"string"},{"name":"n","type":"integer"},{"name":"user_id","type":"string"}],
 "permissions":{"create":"authenticated","read":"owner","update":"owner","delete":"owner"}}
JSON
cat > "$dir/collections/rooms.json" <<'JSON'
{"name":"rooms","fields":[{"name":"title","type":"string"},{"name":"room","type":"string"},{"name":"n","type":"integer"}]}
JSON
# JOURNAL=off measures without the event journal (no resume), for comparison.
journal=true; [[ "${JOURNAL:-on}" == off ]] && journal=false
max_events=${JOURNAL_MAX_EVENTS:-100000}
echo '{"auth":{"rateLimit":{"attempts":0}},"realtime":{"queueCapacity":4096,"journal":'"$journal"',"journalMaxEvents":'"$max_events"',"maxReplayEvents":1000000}}' > "$dir/bakend.json"
(cd "$dir" && exec taskset -c 0 "${BAK_BIN:-$OLDPWD/target/release/bak}" start --port "$port" >"$dir/server.out" 2>"$dir/server.err") &
server=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
pid=$server  # the subshell execs taskset, which execs bak
extra=()
# More servers on the same database: SECOND_SERVER=1 is NODES=2 with the writes through the
# second; NODES=N starts N in all (ports port..port+N-1, all on core 0) and SPREAD=1 spreads
# the subscribers over all of them (aggregate fan-out across nodes).
nodes=${NODES:-1}
[[ -n "${SECOND_SERVER:-}" && $nodes -lt 2 ]] && nodes=2
others=()
if (( nodes > 1 )); then
  [[ -n "${DATABASE:-}" ]] || { echo "SECOND_SERVER/NODES need DATABASE=postgres://…" >&2; exit 2; }
  for k in $(seq 1 $((nodes - 1))); do
    (cd "$dir" && exec taskset -c 0 "${BAK_BIN:-$OLDPWD/target/release/bak}" start --port "$((port + k))" >"$dir/server$k.out" 2>"$dir/server$k.err") &
    others+=($!)
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$((port + k))/health" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  second="${others[*]}"
  if [[ -n "${SPREAD:-}" ]]; then
    for k in $(seq 1 $((nodes - 1))); do extra+=(--also-url "http://127.0.0.1:$((port + k))"); done
  fi
  [[ -n "${SECOND_SERVER:-}" ]] && extra+=(--publish-url "http://127.0.0.1:$((port + nodes - 1))")
fi
[[ $scenario == idle || $scenario == filtered-fanout ]] && extra=(--server-pid "$pid")
taskset -c 1 target/release/bakend-bench "$scenario" --url "http://127.0.0.1:$port" "${extra[@]}" "$@"
