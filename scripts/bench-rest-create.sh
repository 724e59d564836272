#!/usr/bin/env bash
# Measures `rest-create` the way BENCHMARKS.md reports it: release build, server pinned to core 0,
# load tool pinned to core 1, a fresh project in a temp dir, one run of D seconds per repetition.
# Usage: scripts/bench-rest-create.sh [clients=32] [duration=10] [runs=3]
# JOURNAL=off runs without the event journal (no realtime resume), for comparison.
# TRIGGER=noop|db adds a function on `bench.created` (a no-op, or one running a db query) to
# measure REST throughput with an active trigger.
# DATABASE=postgres://user@host:port/db runs `bak` on PostgreSQL, in a fresh database created
#   (and dropped afterwards) on that server; the server's processes are pinned to core 0 beside
#   `bak` for the run (docs/postgres.md, BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-32}
duration=${2:-10}
runs=${3:-3}
port=${PORT:-18080}

# BAK_BIN=path/to/bak measures another build (an A/B against the previous one) with this tool.
[[ -n "${BAK_BIN:-}" ]] || cargo build --release -q -p bak -p bakend-bench
dir=$(mktemp -d /tmp/bakend-bench.XXXXXX)
trap 'kill -INT $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$dir"; [[ -n "${pg_cleanup:-}" ]] && pg_bench_cleanup' EXIT
mkdir -p "$dir/collections"
cat > "$dir/collections/bench.json" <<'JSON'
{"name":"bench","fields":[{"name":"title","type":"string","required":true},{"name":"n","type":"integer"}]}
JSON
if [ "${JOURNAL:-on}" = off ]; then echo '{"realtime":{"journal":false}}' > "$dir/bakend.json"; fi
case "${TRIGGER:-}" in
  noop) mkdir -p "$dir/functions"
        echo 'import { onCreate } from "bakend/functions"; onCreate("bench", () => {});' > "$dir/functions/bench.ts" ;;
  db)   mkdir -p "$dir/functions"
        cat > "$dir/functions/bench.ts" <<'TS'
import { onCreate } from "bakend/functions";
onCreate("bench", ({ record, db }) => {
  const row = db.query("SELECT title FROM bench WHERE id = ?").get(record.id);
  if (!row) throw new Error("missing");
});
TS
        ;;
  "") ;;
  *) echo "TRIGGER must be noop or db" >&2; exit 2 ;;
esac
source scripts/pg-bench-lib.sh
pg_bench_from_env
(cd "$dir" && exec taskset -c 0 "${BAK_BIN:-$OLDPWD/target/release/bak}" start --port "$port" >"$dir/server.out" 2>"$dir/server.err") &
server=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
for r in $(seq 1 "$runs"); do
  echo "--- run $r"
  taskset -c 1 target/release/bakend-bench rest-create --url "http://127.0.0.1:$port" \
    --collection bench --clients "$clients" --duration "$duration" --warmup 2
done
kill -INT $server; wait $server || true
if [[ -z "${DATABASE:-}" ]]; then
  echo "--- database after the runs: $(du -h "$dir/bakend.db" | cut -f1)"; grep "Database closed" "$dir/server.err" || true
fi
if [ -n "${TRIGGER:-}" ]; then
  echo "--- function invocations dropped (queue full): $(grep -c "queue is full" "$dir/server.err" || true) log line(s)"
fi
